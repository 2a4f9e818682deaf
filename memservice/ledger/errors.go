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

package ledger

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/api/resource"
)

// Code classifies a domain error; the gRPC server maps each code to one status code.
type Code int

const (
	// CodeInvalid: the request is malformed (names a field).
	CodeInvalid Code = iota + 1
	// CodeNotFound: the claim, pool or node is unknown.
	CodeNotFound
	// CodeConflict: the request contradicts the existing reservation or its state.
	CodeConflict
	// CodeExhausted: the pool or the node's window has no room.
	CodeExhausted
	// CodeUnavailable: the pool or node cannot serve now (backend down, no agent); retry later.
	CodeUnavailable
	// CodeFailed: a hardware step failed; see the message.
	CodeFailed
)

func (c Code) String() string {
	switch c {
	case CodeInvalid:
		return "Invalid"
	case CodeNotFound:
		return "NotFound"
	case CodeConflict:
		return "Conflict"
	case CodeExhausted:
		return "Exhausted"
	case CodeUnavailable:
		return "Unavailable"
	case CodeFailed:
		return "Failed"
	}
	return fmt.Sprintf("Code(%d)", int(c))
}

// Error is a domain error: a code for the API and a message for a person.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string { return e.Message }

// Errorf makes a domain error.
func Errorf(code Code, format string, args ...any) error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// CodeOf returns the code of a domain error anywhere in err's chain, 0 otherwise.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

// FormatBytes renders a size for messages ("16Gi", "384Mi").
func FormatBytes(n int64) string {
	return resource.NewQuantity(n, resource.BinarySI).String()
}

// Cut cuts s to at most n bytes on a character boundary and marks the cut. A claim's
// message is cut to what its record holds (v1alpha1.ClaimMessageMaxLength): a longer
// one would make every write of the record's status fail.
func Cut(s string, n int) string {
	const mark = " …(cut)"
	if len(s) <= n {
		return s
	}
	cut := max(n-len(mark), 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	if cut == 0 {
		return ""
	}
	return s[:cut] + mark
}
