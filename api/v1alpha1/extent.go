/*
Copyright The kube-dynamic-memory Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package v1alpha1

import "fmt"

// End is the first byte after the extent.
func (e Extent) End() int64 { return e.Offset + e.Length }

func (e Extent) String() string { return fmt.Sprintf("[%d,+%d)", e.Offset, e.Length) }

// Overlaps tells whether two extents share a byte.
func (e Extent) Overlaps(o Extent) bool { return e.Offset < o.End() && o.Offset < e.End() }

// SumLength adds up the lengths of extents.
func SumLength(extents []Extent) int64 {
	var n int64
	for _, e := range extents {
		n += e.Length
	}
	return n
}
