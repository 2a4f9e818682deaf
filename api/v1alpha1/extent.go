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
