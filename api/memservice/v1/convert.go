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

package memservicev1

import "github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"

// The reservation's lifecycle has one type, v1alpha1.ClaimPhase; the gRPC enum is its
// wire form. These two tables are the only mapping between them.
var (
	phaseToState = map[v1alpha1.ClaimPhase]ReservationState{
		v1alpha1.PhaseReserved:     ReservationState_RESERVATION_STATE_RESERVED,
		v1alpha1.PhaseProvisioning: ReservationState_RESERVATION_STATE_PROVISIONING,
		v1alpha1.PhaseOnline:       ReservationState_RESERVATION_STATE_ONLINE,
		v1alpha1.PhaseReleasing:    ReservationState_RESERVATION_STATE_RELEASING,
		v1alpha1.PhaseReleased:     ReservationState_RESERVATION_STATE_RELEASED,
		v1alpha1.PhaseFailed:       ReservationState_RESERVATION_STATE_FAILED,
	}
	stateToPhase = func() map[ReservationState]v1alpha1.ClaimPhase {
		m := make(map[ReservationState]v1alpha1.ClaimPhase, len(phaseToState))
		for p, s := range phaseToState {
			m[s] = p
		}
		return m
	}()
)

// StateOf is the wire form of a phase (UNSPECIFIED for an unknown one).
func StateOf(p v1alpha1.ClaimPhase) ReservationState { return phaseToState[p] }

// Phase is the reservation phase of a wire state ("" for UNSPECIFIED or an unknown value).
func (x ReservationState) Phase() v1alpha1.ClaimPhase { return stateToPhase[x] }

// ExtentsOf is the wire form of extents.
func ExtentsOf(extents []v1alpha1.Extent) []*Extent {
	out := make([]*Extent, len(extents))
	for i, e := range extents {
		out[i] = &Extent{Offset: e.Offset, Length: e.Length}
	}
	return out
}

// ToExtents is the API form of wire extents.
func ToExtents(extents []*Extent) []v1alpha1.Extent {
	out := make([]v1alpha1.Extent, len(extents))
	for i, e := range extents {
		out[i] = v1alpha1.Extent{Offset: e.GetOffset(), Length: e.GetLength()}
	}
	return out
}
