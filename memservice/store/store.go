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

// Package store persists reservations as DynamicMemoryClaim objects: one per
// ResourceClaim (same namespace and name), labelled with the claim UID, node and pool;
// the admission policy v1alpha1.RecordPolicy lets no one else delete them. The object
// is written before any hardware action, its status when the memory is online and when
// a release begins (that of a claim deleted for good only if it has to wait), and the
// service removes it when the memory is back in the pool, so that a restarted service
// rebuilds its ledger from these objects.
//
// Every write names the writing leader in its field manager (LeaderFieldManager), and
// the admission policy LeaderPolicy admits a write by the memory service's
// ServiceAccount only when that leader holds the service's Lease: an instance that
// lost its Lease, paused for longer than the lease, cannot write a record after a new
// leader rebuilt from them. A status write cannot carry an annotation (the API server
// keeps only the status of a write to the status subresource, before admission), so
// the identity travels with the request, where admission sees it for every write.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	dmclient "github.com/dynamicmemory/kube-dynamic-memory/api/client/clientset/versioned/typed/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/provision"
)

// FieldManager is the field manager of the record writes of a memory service without
// leader election; a leader writes as LeaderFieldManager(identity).
const FieldManager = "memservice"

// MaxLeaderIdentity is the longest leader identity a field manager holds (the API
// allows field managers of 128 characters).
const MaxLeaderIdentity = 128 - len(FieldManager) - 1

// LeaderFieldManager is the field manager of the record writes of the leader
// identity: the name LeaderPolicy compares with the holder of the Lease.
func LeaderFieldManager(identity string) string { return FieldManager + "/" + identity }

// LeaderPolicy is the ValidatingAdmissionPolicy that refuses the record writes of a
// memory service that does not hold its Lease (manifests/rbac/memservice-leader.yaml).
const LeaderPolicy = "dynamic-memory-memservice-leader"

// Store writes DynamicMemoryClaims. It implements provision.Store.
type Store struct {
	client dmclient.DynamicMemoryClaimsGetter
	// fieldManager names the writer in every write.
	fieldManager string

	mu sync.Mutex
	// records holds, by claim UID, the object UID of each record as the API server
	// last returned it (a create, a status write, a list), so that its removal is one
	// delete preconditioned on it, with no read.
	records map[string]types.UID
}

// New makes a store that writes with c (the generated clientset's
// DynamicMemoryV1alpha1()) as the leader identity, or, with an empty identity, as a
// service without leader election.
func New(c dmclient.DynamicMemoryClaimsGetter, identity string) *Store {
	s := &Store{client: c, fieldManager: FieldManager, records: map[string]types.UID{}}
	if identity != "" {
		s.fieldManager = LeaderFieldManager(identity)
	}
	return s
}

// Object renders a reservation as its DynamicMemoryClaim (metadata, spec and status).
func Object(r ledger.Reservation) *v1alpha1.DynamicMemoryClaim {
	obj := &v1alpha1.DynamicMemoryClaim{
		TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "DynamicMemoryClaim"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: r.Claim.Namespace,
			Name:      r.Claim.Name,
			Labels: map[string]string{
				v1alpha1.LabelClaimUID: r.Claim.UID,
				v1alpha1.LabelNode:     v1alpha1.LabelValue(r.Node),
				v1alpha1.LabelPool:     v1alpha1.LabelValue(r.Pool),
			},
		},
		Spec: v1alpha1.DynamicMemoryClaimSpec{
			ClaimRef:  v1alpha1.ClaimReference{Name: r.Claim.Name, UID: types.UID(r.Claim.UID)},
			Node:      r.Node,
			Pool:      r.Pool,
			Requested: *resource.NewQuantity(r.Requested, resource.BinarySI),
			Size:      *resource.NewQuantity(r.Bytes, resource.BinarySI),
			Extents:   slices.Clone(r.Extents),
		},
		Status: Status(r),
	}
	if r.Pod != (ledger.PodRef{}) {
		obj.Spec.PodRef = &v1alpha1.PodReference{Name: r.Pod.Name, UID: types.UID(r.Pod.UID)}
	}
	return obj
}

func metaTime(t time.Time) *metav1.Time {
	if t.IsZero() {
		return nil
	}
	return &metav1.Time{Time: t}
}

// Status renders a reservation's state as a DynamicMemoryClaim status.
func Status(r ledger.Reservation) v1alpha1.DynamicMemoryClaimStatus {
	st := v1alpha1.DynamicMemoryClaimStatus{
		Phase:          r.State,
		NUMANodes:      slices.Clone(r.NUMANodes),
		ReservedAt:     metaTime(r.ReservedAt),
		ProvisioningAt: metaTime(r.ProvisioningAt),
		OnlineAt:       metaTime(r.OnlineAt),
		ReleasingAt:    metaTime(r.ReleasingAt),
		ReleasedAt:     metaTime(r.ReleasedAt),
		Message:        r.Message,
	}
	st.Extents = slices.Clone(r.Extents)
	if !r.OnlineAt.IsZero() && !r.ProvisioningAt.IsZero() {
		st.ProvisioningDuration = &metav1.Duration{Duration: r.OnlineAt.Sub(r.ProvisioningAt)}
	}
	cond := metav1.Condition{Type: dra.ConditionOnline, Status: metav1.ConditionFalse, Reason: string(st.Phase), Message: r.Message,
		LastTransitionTime: metav1.Time{Time: r.UpdatedAt}}
	if r.State == v1alpha1.PhaseOnline {
		cond.Status = metav1.ConditionTrue
	}
	if cond.LastTransitionTime.IsZero() {
		cond.LastTransitionTime = metav1.Now()
	}
	meta.SetStatusCondition(&st.Conditions, cond)
	return st
}

// Reservation reads a reservation back from its DynamicMemoryClaim.
func Reservation(obj *v1alpha1.DynamicMemoryClaim) (ledger.Reservation, error) {
	uid := obj.Labels[v1alpha1.LabelClaimUID]
	if uid == "" {
		uid = string(obj.Spec.ClaimRef.UID)
	}
	r := ledger.Reservation{
		Claim:     ledger.ClaimRef{UID: uid, Namespace: obj.Namespace, Name: obj.Spec.ClaimRef.Name},
		Node:      obj.Spec.Node,
		Pool:      obj.Spec.Pool,
		Requested: obj.Spec.Requested.Value(),
		Bytes:     obj.Spec.Size.Value(),
		NUMANodes: slices.Clone(obj.Status.NUMANodes),
		Message:   obj.Status.Message,
	}
	if obj.Spec.PodRef != nil {
		r.Pod = ledger.PodRef{Name: obj.Spec.PodRef.Name, UID: string(obj.Spec.PodRef.UID)}
	}
	r.Extents = slices.Clone(obj.Status.Extents)
	if len(r.Extents) == 0 {
		r.Extents = slices.Clone(obj.Spec.Extents)
	}
	switch phase := obj.CurrentPhase(); phase {
	case v1alpha1.PhaseReserved, v1alpha1.PhaseProvisioning, v1alpha1.PhaseOnline,
		v1alpha1.PhaseReleasing, v1alpha1.PhaseReleased, v1alpha1.PhaseFailed:
		r.State = phase
		if obj.Status.Phase == "" {
			// Created with its extents, the status not written yet: the hardware may
			// have acted; provisioning resumes.
			r.ProvisioningAt = obj.CreationTimestamp.Time
		}
	default:
		// A record of an older version, created without its extents, the service
		// stopped before its first status write: that version acted only after
		// both writes, so nothing was done yet. Read back as Reserved; a rebuild
		// finishes it as released (the chaos suite found such records set aside
		// for good while they held nothing, and, restored, holding bytes no extent
		// backs).
		r.State = v1alpha1.PhaseReserved
	}
	r.UpdatedAt = obj.CreationTimestamp.Time
	for _, t := range []struct {
		dst *time.Time
		src *metav1.Time
	}{
		{&r.ReservedAt, obj.Status.ReservedAt}, {&r.ProvisioningAt, obj.Status.ProvisioningAt},
		{&r.OnlineAt, obj.Status.OnlineAt}, {&r.ReleasingAt, obj.Status.ReleasingAt}, {&r.ReleasedAt, obj.Status.ReleasedAt},
	} {
		if t.src != nil {
			*t.dst = t.src.Time
			if t.src.After(r.UpdatedAt) {
				r.UpdatedAt = t.src.Time
			}
		}
	}
	// Whether the agent was asked to online the memory is not recorded: assume it was
	// for any provisioned claim, so that release always has it offlined first.
	r.OnHost = r.State != v1alpha1.PhaseReleased && r.State != v1alpha1.PhaseReserved
	if r.Claim.UID == "" || r.Node == "" || r.Pool == "" || r.Bytes <= 0 {
		return r, fmt.Errorf("DynamicMemoryClaim %s/%s is incomplete (claim UID %q, node %q, pool %q, size %d)",
			obj.Namespace, obj.Name, r.Claim.UID, r.Node, r.Pool, r.Bytes)
	}
	return r, nil
}

// Create records a claim entering Provisioning: one write, the record with its
// extents in its spec (CurrentPhase reads it as Provisioning until the status is
// written). An older record of the same name that holds no memory is replaced (one
// released by an older version, which kept released records, or whose removal was
// cut short); a record of the same reservation (a retry) is taken as it is.
func (s *Store) Create(ctx context.Context, r ledger.Reservation) error {
	obj := Object(r)
	obj.Status = v1alpha1.DynamicMemoryClaimStatus{} // a subresource: the API server drops it on create
	created, err := s.client.DynamicMemoryClaims(obj.Namespace).Create(ctx, obj, metav1.CreateOptions{FieldManager: s.fieldManager})
	if apierrors.IsAlreadyExists(err) {
		created, err = s.replace(ctx, obj)
	}
	if err != nil {
		return fmt.Errorf("create DynamicMemoryClaim %s/%s: %w", obj.Namespace, obj.Name, fenced(err))
	}
	s.remember(created)
	return nil
}

// remember notes the object UID of a record the API server returned. A record of an
// earlier version, which holds the finalizer, is not noted: its removal reads it.
func (s *Store) remember(obj *v1alpha1.DynamicMemoryClaim) {
	if obj == nil || obj.Labels[v1alpha1.LabelClaimUID] == "" || slices.Contains(obj.Finalizers, v1alpha1.Finalizer) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[obj.Labels[v1alpha1.LabelClaimUID]] = obj.UID
}

// recordUID returns the object UID remembered for claim uid's record.
func (s *Store) recordUID(uid string) (types.UID, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.records[uid]
	return rec, ok
}

func (s *Store) forget(uid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.records, uid)
}

func (s *Store) replace(ctx context.Context, obj *v1alpha1.DynamicMemoryClaim) (*v1alpha1.DynamicMemoryClaim, error) {
	old, err := s.client.DynamicMemoryClaims(obj.Namespace).Get(ctx, obj.Name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	sameClaim := old.Labels[v1alpha1.LabelClaimUID] == obj.Labels[v1alpha1.LabelClaimUID]
	if sameClaim && old.Status.Phase != v1alpha1.PhaseReleased {
		if !sameReservation(old, obj) {
			return nil, fmt.Errorf("the record of claim %s still holds memory (%s, %s of pool %s on node %s, extents %v); retry once it is released",
				old.Labels[v1alpha1.LabelClaimUID], old.CurrentPhase(), old.Spec.Size.String(), old.Spec.Pool, old.Spec.Node, old.Spec.Extents)
		}
		return old, nil
	}
	if old.Status.Phase != v1alpha1.PhaseReleased {
		return nil, fmt.Errorf("an earlier claim %s of the same name still holds memory (%s); retry once it is released",
			old.Labels[v1alpha1.LabelClaimUID], old.CurrentPhase())
	}
	if err := s.remove(ctx, old.Namespace, old.Name, old.Labels[v1alpha1.LabelClaimUID]); err != nil {
		return nil, fmt.Errorf("remove released DynamicMemoryClaim: %w", err)
	}
	return s.client.DynamicMemoryClaims(obj.Namespace).Create(ctx, obj, metav1.CreateOptions{FieldManager: s.fieldManager})
}

// sameReservation tells whether a record of the claim is the one Create is about to
// write: a retry after the object was created, before or after its first status write.
func sameReservation(old, obj *v1alpha1.DynamicMemoryClaim) bool {
	extents := old.Spec.Extents
	if len(extents) == 0 && old.Status.Phase != "" { // an older version's record
		extents = old.Status.Extents
	}
	return old.Spec.Node == obj.Spec.Node && old.Spec.Pool == obj.Spec.Pool && old.Spec.Size.Cmp(obj.Spec.Size) == 0 &&
		(len(extents) == 0 && old.Status.Phase == "" || slices.Equal(extents, obj.Spec.Extents))
}

// Update records the reservation's state in its object's status. The write is fenced
// by the claim UID: a record of the same name made for another claim (the
// ResourceClaim was recreated) is left alone and the write fails.
func (s *Store) Update(ctx context.Context, r ledger.Reservation) error {
	if err := s.writeStatus(ctx, r.Claim.Namespace, r.Claim.Name, r.Claim.UID, Status(r)); err != nil {
		return fmt.Errorf("update status of DynamicMemoryClaim %s/%s to %s: %w", r.Claim.Namespace, r.Claim.Name, r.State, err)
	}
	return nil
}

// Released removes the record of a claim whose memory is back in the pool: one
// delete, preconditioned on the object UID the API server returned for the claim's
// record, and no read (a record this instance has not seen written or listed is read
// first). No status is written: nothing reads a record that is going. A record of the
// same name that belongs to another claim means this claim's record is gone already:
// nothing is left to do, and the other record is left alone.
func (s *Store) Released(ctx context.Context, r ledger.Reservation) error {
	if err := s.remove(ctx, r.Claim.Namespace, r.Claim.Name, r.Claim.UID); err != nil {
		return fmt.Errorf("remove DynamicMemoryClaim %s/%s: %w", r.Claim.Namespace, r.Claim.Name, fenced(err))
	}
	s.forget(r.Claim.UID)
	return nil
}

// remove deletes claim uid's record. The records are not owned by their
// ResourceClaims: the memory service alone ends a record, when the memory is back, so
// no garbage collection reads and deletes them. A record of an earlier version holds
// the finalizer, which goes first.
func (s *Store) remove(ctx context.Context, namespace, name, uid string) error {
	rec, known := s.recordUID(uid)
	if !known {
		obj, err := s.client.DynamicMemoryClaims(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return ignoreNotFound(err)
		}
		if !belongsTo(obj, uid) {
			return nil
		}
		if slices.Contains(obj.Finalizers, v1alpha1.Finalizer) {
			return s.removeWithFinalizer(ctx, namespace, name, uid)
		}
		rec = obj.UID
	}
	err := s.client.DynamicMemoryClaims(namespace).Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &rec}})
	if apierrors.IsConflict(err) {
		return nil // the precondition failed: the record is gone and the name another's
	}
	return ignoreNotFound(err)
}

// removeWithFinalizer drops the finalizer of claim uid's record, a record of an
// earlier version, and deletes it.
func (s *Store) removeWithFinalizer(ctx context.Context, namespace, name, uid string) error {
	patch, err := json.Marshal([]map[string]any{
		{"op": "test", "path": claimUIDPointer, "value": uid},
		{"op": "test", "path": "/metadata/finalizers", "value": []string{v1alpha1.Finalizer}},
		{"op": "remove", "path": "/metadata/finalizers"},
	})
	if err != nil {
		return err
	}
	obj, err := s.client.DynamicMemoryClaims(namespace).Patch(ctx, name, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: s.fieldManager})
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		// The tests failed (the record is another claim's, or has other finalizers
		// too), or the write failed: read the record to tell.
		if obj, err = s.dropFinalizer(ctx, namespace, name, uid); err != nil || obj == nil {
			return ignoreNotFound(err)
		}
	}
	if obj.DeletionTimestamp != nil {
		return nil // being deleted already: gone with its finalizer
	}
	err = s.client.DynamicMemoryClaims(namespace).Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &obj.UID}})
	if apierrors.IsConflict(err) {
		return nil // the precondition failed: the record is gone and the name another's
	}
	return ignoreNotFound(err)
}

func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// SetAside marks the record of a reservation that could not be restored: condition
// SetAside=True with the reason, the rest of the status left as it was for a person to
// read.
func (s *Store) SetAside(ctx context.Context, r ledger.Reservation, why string) error {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		obj, err := s.client.DynamicMemoryClaims(r.Claim.Namespace).Get(ctx, r.Claim.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		changed := meta.SetStatusCondition(&obj.Status.Conditions, metav1.Condition{
			Type: v1alpha1.ClaimConditionSetAside, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonRestoreRefused,
			Message: ledger.Cut(why, v1alpha1.ConditionMessageMaxLength), ObservedGeneration: obj.Generation,
		})
		if !changed {
			return nil
		}
		_, err = s.client.DynamicMemoryClaims(r.Claim.Namespace).UpdateStatus(ctx, obj, metav1.UpdateOptions{FieldManager: s.fieldManager})
		return err
	})
	if err != nil {
		return fmt.Errorf("mark DynamicMemoryClaim %s/%s set aside: %w", r.Claim.Namespace, r.Claim.Name, fenced(err))
	}
	return nil
}

// ReleaseBlocked marks the record of a claim whose memory its node agent cannot take
// offline: condition ReleaseBlocked=True, reason MemoryBusy, with the message; the
// rest of the status is left as it is. It implements provision.Conditions.
func (s *Store) ReleaseBlocked(ctx context.Context, r ledger.Reservation, message string) error {
	return s.setReleaseBlocked(ctx, r, metav1.Condition{
		Type: v1alpha1.ClaimConditionReleaseBlocked, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonMemoryBusy,
		Message: ledger.Cut(message, v1alpha1.ConditionMessageMaxLength),
	})
}

// ReleaseUnblocked turns the ReleaseBlocked condition of a record that has it False,
// reason MemoryOfflined: its memory went offline.
func (s *Store) ReleaseUnblocked(ctx context.Context, r ledger.Reservation) error {
	return s.setReleaseBlocked(ctx, r, metav1.Condition{
		Type: v1alpha1.ClaimConditionReleaseBlocked, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonMemoryOfflined,
		Message: "the memory went offline",
	})
}

// setReleaseBlocked writes cond on claim r's record. A False condition is written
// only over a True one; a record that is gone, or is another claim's, is left alone.
func (s *Store) setReleaseBlocked(ctx context.Context, r ledger.Reservation, cond metav1.Condition) error {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		obj, err := s.client.DynamicMemoryClaims(r.Claim.Namespace).Get(ctx, r.Claim.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) || err == nil && !belongsTo(obj, r.Claim.UID) {
			return nil
		}
		if err != nil {
			return err
		}
		if cond.Status == metav1.ConditionFalse && !meta.IsStatusConditionTrue(obj.Status.Conditions, cond.Type) {
			return nil
		}
		cond.ObservedGeneration = obj.Generation
		if !meta.SetStatusCondition(&obj.Status.Conditions, cond) {
			return nil
		}
		_, err = s.client.DynamicMemoryClaims(r.Claim.Namespace).UpdateStatus(ctx, obj, metav1.UpdateOptions{FieldManager: s.fieldManager})
		return err
	})
	if err != nil {
		return fmt.Errorf("set condition %s=%s on DynamicMemoryClaim %s/%s: %w", cond.Type, cond.Status, r.Claim.Namespace, r.Claim.Name, fenced(err))
	}
	return nil
}

// belongsTo tells whether a record is the one of claim uid.
func belongsTo(obj *v1alpha1.DynamicMemoryClaim, uid string) bool {
	return obj.Labels[v1alpha1.LabelClaimUID] == uid
}

// claimUIDPointer is the JSON pointer of a record's claim UID label.
var claimUIDPointer = "/metadata/labels/" + strings.NewReplacer("~", "~0", "/", "~1").Replace(v1alpha1.LabelClaimUID)

// writeStatus replaces a record's status if the record is claim uid's: the JSON patch
// tests the claim UID label in the same request.
func (s *Store) writeStatus(ctx context.Context, namespace, name, uid string, st v1alpha1.DynamicMemoryClaimStatus) error {
	_, err := s.patchStatus(ctx, namespace, name, uid, st)
	return err
}

// patchStatus is writeStatus returning the record written.
func (s *Store) patchStatus(ctx context.Context, namespace, name, uid string, st v1alpha1.DynamicMemoryClaimStatus) (*v1alpha1.DynamicMemoryClaim, error) {
	patch, err := json.Marshal([]map[string]any{
		{"op": "test", "path": claimUIDPointer, "value": uid},
		{"op": "add", "path": "/status", "value": st},
	})
	if err != nil {
		return nil, err
	}
	obj, err := s.client.DynamicMemoryClaims(namespace).Patch(ctx, name, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: s.fieldManager}, "status")
	if err == nil {
		s.remember(obj)
	}
	return obj, fenced(err)
}

// dropFinalizer removes the finalizer of claim uid's record and returns the record;
// the update carries the resourceVersion it read, so a record replaced meanwhile is
// never touched. A record of another claim is left alone and not returned.
func (s *Store) dropFinalizer(ctx context.Context, namespace, name, uid string) (*v1alpha1.DynamicMemoryClaim, error) {
	var obj *v1alpha1.DynamicMemoryClaim
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := s.client.DynamicMemoryClaims(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		obj = nil
		if !belongsTo(cur, uid) {
			return nil
		}
		if !slices.Contains(cur.Finalizers, v1alpha1.Finalizer) {
			obj = cur
			return nil
		}
		cur.Finalizers = slices.DeleteFunc(cur.Finalizers, func(f string) bool { return f == v1alpha1.Finalizer })
		obj, err = s.client.DynamicMemoryClaims(namespace).Update(ctx, cur, metav1.UpdateOptions{FieldManager: s.fieldManager})
		return err
	})
	return obj, fenced(err)
}

// fenced marks the error of a write that LeaderPolicy refused with provision.ErrFenced:
// another instance holds the Lease.
func fenced(err error) error {
	if apierrors.IsForbidden(err) && !errors.Is(err, provision.ErrFenced) &&
		strings.Contains(err.Error(), "ValidatingAdmissionPolicy '"+LeaderPolicy+"'") {
		return fmt.Errorf("%w: %w", provision.ErrFenced, err)
	}
	return err
}

// List reads every recorded reservation. Objects that cannot be read back are
// returned in bad, with the reason.
func (s *Store) List(ctx context.Context) (good []ledger.Reservation, bad []error, err error) {
	list, err := s.client.DynamicMemoryClaims(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("list DynamicMemoryClaims: %w", err)
	}
	for i := range list.Items {
		r, err := Reservation(&list.Items[i])
		if err != nil {
			bad = append(bad, err)
			continue
		}
		s.remember(&list.Items[i])
		good = append(good, r)
	}
	return good, bad, nil
}
