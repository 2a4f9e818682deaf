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

// Package signer is the memory service's PodCertificateRequest signer: it gives the
// pods of the memory service's clients (scheduler, node agents, DRA plugins) their
// mutual-TLS identity, short-lived and bound to the node the pod runs on, and
// publishes the CA that clients and the server trust as a ClusterTrustBundle.
//
// A request is signed only when its ServiceAccount is one the signer is configured
// with (each gives one role), and the pod it names exists with that UID, on that node,
// under that ServiceAccount. The API server's NodeRestriction admission lets a kubelet
// ask only for pods on its own node; the signer checks the pod again so that a request
// created by anyone else cannot borrow an identity either. Everything else is denied
// with a reason on the request.
package signer

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	certinformersv1 "k8s.io/client-go/informers/certificates/v1"
	"k8s.io/client-go/kubernetes"
	certlistersv1 "k8s.io/client-go/listers/certificates/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/dynamicmemory/kube-dynamic-memory/api/pki"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/metrics"
)

const (
	// DefaultLifetime is how long an issued certificate is valid; the kubelet renews
	// it from half of it on.
	DefaultLifetime = 6 * time.Hour
	// MinLifetime is the shortest lifetime the API server accepts.
	MinLifetime = time.Hour
	// TrustBundleInterval is how often the ClusterTrustBundle is compared with the CA
	// on disk.
	TrustBundleInterval = time.Minute
	// TrustBundleSuffix ends the name of the ClusterTrustBundle the signer publishes
	// ("<signer name with : for />:ca").
	TrustBundleSuffix = "ca"
	// trustBundleLabel marks the ClusterTrustBundle; clients select it with it.
	trustBundleLabel = "app.kubernetes.io/part-of"
	trustBundleValue = "dynamic-memory"
	// notBeforeSkew backdates a certificate for clocks a little behind.
	notBeforeSkew = time.Minute
)

// Reasons of a Denied or Failed condition.
const (
	ReasonIssued                = "Issued"
	ReasonServiceAccountRefused = "ServiceAccountNotAllowed"
	ReasonPodMismatch           = "PodMismatch"
	ReasonSigningFailed         = "SigningFailed"
)

// Config configures a Signer.
type Config struct {
	Client    kubernetes.Interface
	Authority *pki.Authority
	// Name is the signer name the signer answers for (deploy.SignerName).
	Name string
	// ServiceAccounts gives the role the pods of each ServiceAccount get; any other
	// ServiceAccount is denied.
	ServiceAccounts map[types.NamespacedName]pki.Role
	// Lifetime of issued certificates (default DefaultLifetime; at least
	// MinLifetime), shortened to a request's maxExpirationSeconds.
	Lifetime time.Duration
	// Events records a Warning on the pod of a denied request (optional).
	Events  record.EventRecorder
	Metrics *metrics.Metrics
	Clock   clock.WithTicker
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.Client == nil || c.Authority == nil || c.Metrics == nil {
		errs = append(errs, errors.New("client, authority and metrics are required"))
	}
	if c.Name == "" || strings.Count(c.Name, "/") != 1 {
		errs = append(errs, fmt.Errorf("signer name must be <domain>/<path>, got %q", c.Name))
	}
	if len(c.ServiceAccounts) == 0 {
		errs = append(errs, errors.New("at least one ServiceAccount must be allowed a certificate"))
	}
	for sa, role := range c.ServiceAccounts {
		if role != pki.RoleScheduler && !role.NodeBound() {
			errs = append(errs, fmt.Errorf("ServiceAccount %s: role %q cannot be given to pods (scheduler, agent or draplugin)", sa, role))
		}
	}
	if c.Lifetime != 0 && c.Lifetime < MinLifetime {
		errs = append(errs, fmt.Errorf("certificate lifetime must be at least %s (the API server refuses shorter), got %s", MinLifetime, c.Lifetime))
	}
	return errors.Join(errs...)
}

// Signer signs PodCertificateRequests of its signer name.
type Signer struct {
	cfg      Config
	informer cache.SharedIndexInformer
	lister   certlistersv1.PodCertificateRequestLister
	queue    workqueue.TypedRateLimitingInterface[string]
}

// New returns a signer; Run starts it.
func New(cfg Config) (*Signer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("certificate signer: %w", err)
	}
	if cfg.Lifetime == 0 {
		cfg.Lifetime = DefaultLifetime
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	informer := certinformersv1.NewFilteredPodCertificateRequestInformer(cfg.Client, metav1.NamespaceAll, 0, cache.Indexers{},
		func(opts *metav1.ListOptions) {
			opts.FieldSelector = fields.OneTermEqualSelector("spec.signerName", cfg.Name).String()
		})
	s := &Signer{
		cfg:      cfg,
		informer: informer,
		lister:   certlistersv1.NewPodCertificateRequestLister(informer.GetIndexer()),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "podcertificaterequests", Clock: cfg.Clock}),
	}
	enqueue := func(obj any) {
		if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
			s.queue.Add(key)
		}
	}
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
	}); err != nil {
		return nil, err
	}
	return s, nil
}

// TrustBundleName is the name of the ClusterTrustBundle of a signer.
func TrustBundleName(signerName string) string {
	return strings.Replace(signerName, "/", ":", 1) + ":" + TrustBundleSuffix
}

// Run signs requests and keeps the trust bundle current until ctx ends.
func (s *Signer) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithName("signer")
	ctx = klog.NewContext(ctx, logger)
	defer s.queue.ShutDown()
	go s.informer.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), s.informer.HasSynced) {
		return nil
	}
	logger.Info("Signing PodCertificateRequests", "signerName", s.cfg.Name, "serviceAccounts", s.allowed(), "lifetime", s.cfg.Lifetime)
	go wait.UntilWithContext(ctx, func(ctx context.Context) {
		for s.processNext(ctx) {
		}
	}, time.Second)
	wait.JitterUntilWithContext(ctx, func(ctx context.Context) {
		if err := s.ensureTrustBundle(ctx); err != nil {
			logger.Error(err, "Publish the trust bundle", "clusterTrustBundle", TrustBundleName(s.cfg.Name))
		}
	}, TrustBundleInterval, 0.1, true)
	return nil
}

func (s *Signer) allowed() []string {
	var out []string
	for _, sa := range slices.SortedFunc(maps.Keys(s.cfg.ServiceAccounts), func(a, b types.NamespacedName) int {
		return strings.Compare(a.String(), b.String())
	}) {
		out = append(out, sa.String()+"="+string(s.cfg.ServiceAccounts[sa]))
	}
	return out
}

// ensureTrustBundle makes the ClusterTrustBundle hold the CA bundle on disk.
func (s *Signer) ensureTrustBundle(ctx context.Context) error {
	bundle, err := s.cfg.Authority.TrustBundle()
	if err != nil {
		return err
	}
	want := certificatesv1.ClusterTrustBundle{
		ObjectMeta: metav1.ObjectMeta{Name: TrustBundleName(s.cfg.Name), Labels: map[string]string{trustBundleLabel: trustBundleValue}},
		Spec:       certificatesv1.ClusterTrustBundleSpec{SignerName: s.cfg.Name, TrustBundle: string(bundle)},
	}
	bundles := s.cfg.Client.CertificatesV1().ClusterTrustBundles()
	got, err := bundles.Get(ctx, want.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = bundles.Create(ctx, &want, metav1.CreateOptions{})
		if err == nil {
			klog.FromContext(ctx).Info("Published the trust bundle", "clusterTrustBundle", want.Name)
		}
		return err
	}
	if err != nil {
		return err
	}
	if apiequality.Semantic.DeepEqual(got.Spec, want.Spec) && got.Labels[trustBundleLabel] == trustBundleValue {
		return nil
	}
	got = got.DeepCopy()
	got.Spec = want.Spec
	if got.Labels == nil {
		got.Labels = map[string]string{}
	}
	got.Labels[trustBundleLabel] = trustBundleValue
	_, err = bundles.Update(ctx, got, metav1.UpdateOptions{})
	if err == nil {
		klog.FromContext(ctx).Info("Updated the trust bundle to the CA on disk", "clusterTrustBundle", want.Name)
	}
	return err
}

func (s *Signer) processNext(ctx context.Context) bool {
	key, quit := s.queue.Get()
	if quit {
		return false
	}
	defer s.queue.Done(key)
	if err := s.handle(ctx, key); err != nil {
		utilruntime.HandleErrorWithContext(ctx, err, "Sign PodCertificateRequest, will retry", "request", key)
		s.queue.AddRateLimited(key)
		return true
	}
	s.queue.Forget(key)
	return true
}

// handle answers one request: issued, denied with a reason, or failed; an error
// means try again.
func (s *Signer) handle(ctx context.Context, key string) error {
	namespace, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	req, err := s.lister.PodCertificateRequests(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if answered(req) || req.Spec.SignerName != s.cfg.Name {
		return nil
	}
	logger := klog.FromContext(ctx).WithValues("request", klog.KObj(req), "pod", klog.KRef(req.Namespace, req.Spec.PodName), "node", req.Spec.NodeName)
	id, denial, err := s.decide(ctx, req)
	if err != nil {
		return err
	}
	out := req.DeepCopy()
	now := metav1.NewTime(s.cfg.Clock.Now())
	result := "issued"
	switch {
	case denial != nil:
		result = "denied"
		out.Status.Conditions = []metav1.Condition{{
			Type: certificatesv1.PodCertificateRequestConditionTypeDenied, Status: metav1.ConditionTrue,
			Reason: denial.reason, Message: denial.message, LastTransitionTime: now,
		}}
	default:
		if err := s.issue(out, id); err != nil {
			var failed *failure
			if !errors.As(err, &failed) {
				return err
			}
			result = "failed"
			denial = &verdict{reason: ReasonSigningFailed, message: failed.Error()}
			out.Status = certificatesv1.PodCertificateRequestStatus{Conditions: []metav1.Condition{{
				Type: certificatesv1.PodCertificateRequestConditionTypeFailed, Status: metav1.ConditionTrue,
				Reason: ReasonSigningFailed, Message: failed.Error(), LastTransitionTime: now,
			}}}
		}
	}
	if _, err := s.cfg.Client.CertificatesV1().PodCertificateRequests(out.Namespace).UpdateStatus(ctx, out, metav1.UpdateOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("write the answer to PodCertificateRequest %s: %w", key, err)
	}
	reason := ReasonIssued
	if denial != nil {
		reason = denial.reason
		logger.Info("Refused a certificate", "reason", denial.reason, "message", denial.message)
		if s.cfg.Events != nil {
			pod := &corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: req.Namespace, Name: req.Spec.PodName, UID: req.Spec.PodUID}
			s.cfg.Events.Event(pod, corev1.EventTypeWarning, denial.reason, "certificate of signer "+s.cfg.Name+" refused: "+denial.message)
		}
	} else {
		logger.V(2).Info("Issued a certificate", "identity", id.String(), "notAfter", out.Status.NotAfter)
	}
	s.cfg.Metrics.CertificateRequests.WithLabelValues(result, reason).Inc()
	return nil
}

// answered tells whether the request already has its final condition.
func answered(req *certificatesv1.PodCertificateRequest) bool {
	for _, t := range []string{
		certificatesv1.PodCertificateRequestConditionTypeIssued,
		certificatesv1.PodCertificateRequestConditionTypeDenied,
		certificatesv1.PodCertificateRequestConditionTypeFailed,
	} {
		if meta.IsStatusConditionTrue(req.Status.Conditions, t) {
			return true
		}
	}
	return false
}

// verdict is why a request is refused.
type verdict struct{ reason, message string }

// failure is a request that cannot be signed however often it is tried.
type failure struct{ err error }

func (f *failure) Error() string { return f.err.Error() }

// decide gives the identity a request gets, or why it gets none. An error means the
// answer could not be found out now (the API server did not answer).
func (s *Signer) decide(ctx context.Context, req *certificatesv1.PodCertificateRequest) (pki.Identity, *verdict, error) {
	sa := types.NamespacedName{Namespace: req.Namespace, Name: req.Spec.ServiceAccountName}
	role, ok := s.cfg.ServiceAccounts[sa]
	if !ok {
		return pki.Identity{}, &verdict{ReasonServiceAccountRefused, fmt.Sprintf(
			"ServiceAccount %s gets no identity from this signer; only %s do (the memory service's --signer-service-accounts)",
			sa, strings.Join(s.allowed(), ", "))}, nil
	}
	if len(req.Spec.UnverifiedUserAnnotations) > 0 {
		return pki.Identity{}, &verdict{certificatesv1.PodCertificateRequestConditionInvalidUserConfig, fmt.Sprintf(
			"this signer takes no userAnnotations; remove %s from the pod's podCertificate volume", strings.Join(slices.Sorted(maps.Keys(req.Spec.UnverifiedUserAnnotations)), ", "))}, nil
	}
	pod, err := s.cfg.Client.CoreV1().Pods(req.Namespace).Get(ctx, req.Spec.PodName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return pki.Identity{}, &verdict{ReasonPodMismatch, fmt.Sprintf("pod %s/%s does not exist", req.Namespace, req.Spec.PodName)}, nil
	}
	if err != nil {
		return pki.Identity{}, nil, fmt.Errorf("read pod %s/%s: %w", req.Namespace, req.Spec.PodName, err)
	}
	switch {
	case pod.UID != req.Spec.PodUID:
		return pki.Identity{}, &verdict{ReasonPodMismatch, fmt.Sprintf("pod %s/%s has UID %s, the request names %s", pod.Namespace, pod.Name, pod.UID, req.Spec.PodUID)}, nil
	case pod.Spec.NodeName == "" || types.NodeName(pod.Spec.NodeName) != req.Spec.NodeName:
		return pki.Identity{}, &verdict{ReasonPodMismatch, fmt.Sprintf("pod %s/%s runs on node %q, the request names node %q", pod.Namespace, pod.Name, pod.Spec.NodeName, req.Spec.NodeName)}, nil
	case pod.Spec.ServiceAccountName != req.Spec.ServiceAccountName:
		return pki.Identity{}, &verdict{ReasonPodMismatch, fmt.Sprintf("pod %s/%s runs as ServiceAccount %q, the request names %q", pod.Namespace, pod.Name, pod.Spec.ServiceAccountName, req.Spec.ServiceAccountName)}, nil
	}
	if _, err := publicKey(req); err != nil {
		return pki.Identity{}, &verdict{certificatesv1.PodCertificateRequestConditionUnsupportedKeyType, err.Error()}, nil
	}
	id := pki.Identity{Role: role}
	if role.NodeBound() {
		id.Node = string(req.Spec.NodeName)
	}
	return id, nil, nil
}

// publicKey is the key the request's stub CSR carries (the API server has checked
// its signature).
func publicKey(req *certificatesv1.PodCertificateRequest) (any, error) {
	csr, err := x509.ParseCertificateRequest(req.Spec.StubPKCS10Request)
	if err != nil {
		return nil, fmt.Errorf("the request's stubPKCS10Request does not parse: %w", err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey, ed25519.PublicKey:
		return k, nil
	case *rsa.PublicKey:
		if k.N.BitLen() >= 3072 {
			return k, nil
		}
	}
	return nil, fmt.Errorf("key type %T is not supported; use keyType ECDSAP256 in the podCertificate volume", csr.PublicKey)
}

// issue signs the request's key with id and fills its status.
func (s *Signer) issue(req *certificatesv1.PodCertificateRequest, id pki.Identity) error {
	pub, err := publicKey(req)
	if err != nil {
		return &failure{err}
	}
	lifetime := s.cfg.Lifetime
	if max := time.Duration(ptr.Deref(req.Spec.MaxExpirationSeconds, 0)) * time.Second; max > 0 && max < lifetime {
		lifetime = max
	}
	// Whole seconds: the status must equal what the certificate encodes.
	notBefore := s.cfg.Clock.Now().Add(-notBeforeSkew).Truncate(time.Second)
	notAfter := notBefore.Add(lifetime)
	chain, err := s.cfg.Authority.SignClient(id, pub, notBefore, notAfter)
	if err != nil {
		return &failure{fmt.Errorf("sign %s: %w", id, err)}
	}
	req.Status.Conditions = []metav1.Condition{{
		Type: certificatesv1.PodCertificateRequestConditionTypeIssued, Status: metav1.ConditionTrue,
		Reason: ReasonIssued, Message: "issued the identity " + id.String(), LastTransitionTime: metav1.NewTime(s.cfg.Clock.Now()),
	}}
	req.Status.CertificateChain = string(chain)
	req.Status.NotBefore = ptr.To(metav1.NewTime(notBefore))
	req.Status.BeginRefreshAt = ptr.To(metav1.NewTime(notBefore.Add(lifetime / 2)))
	req.Status.NotAfter = ptr.To(metav1.NewTime(notAfter))
	return nil
}
