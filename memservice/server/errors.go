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

package server

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
)

// codeTable maps domain errors to gRPC status codes: the one place that decides.
var codeTable = map[ledger.Code]codes.Code{
	ledger.CodeInvalid:     codes.InvalidArgument,
	ledger.CodeNotFound:    codes.NotFound,
	ledger.CodeConflict:    codes.FailedPrecondition,
	ledger.CodeExhausted:   codes.ResourceExhausted,
	ledger.CodeUnavailable: codes.Unavailable,
	ledger.CodeFailed:      codes.Aborted,
}

// toStatus turns an error from the ledger or the provisioning code into a gRPC status.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	if c := ledger.CodeOf(err); c != 0 {
		return status.Error(codeTable[c], err.Error())
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}
