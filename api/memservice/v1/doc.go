// Package memservicev1 is the gRPC API of the dynamic memory service (generated from
// memservice.proto by `make generate`).
package memservicev1
