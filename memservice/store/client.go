package store

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
)

// Scheme knows the project's custom resources.
var Scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	return s
}()

// Client is a typed client of the DynamicMemoryPool and DynamicMemoryClaim resources.
type Client struct {
	rest rest.Interface
}

// NewClient makes a client from a REST config.
func NewClient(cfg *rest.Config) (*Client, error) {
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &v1alpha1.SchemeGroupVersion
	c.APIPath = "/apis"
	c.ContentType = runtime.ContentTypeJSON
	c.NegotiatedSerializer = serializer.NewCodecFactory(Scheme).WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", v1alpha1.SchemeGroupVersion, err)
	}
	return &Client{rest: rc}, nil
}

var paramCodec = runtime.NewParameterCodec(Scheme)

const (
	claims = "dynamicmemoryclaims"
	pools  = "dynamicmemorypools"
)

// GetClaim reads one DynamicMemoryClaim.
func (c *Client) GetClaim(ctx context.Context, namespace, name string) (*v1alpha1.DynamicMemoryClaim, error) {
	out := &v1alpha1.DynamicMemoryClaim{}
	err := c.rest.Get().Namespace(namespace).Resource(claims).Name(name).Do(ctx).Into(out)
	return out, err
}

// ListClaims lists DynamicMemoryClaims of every namespace.
func (c *Client) ListClaims(ctx context.Context, opts metav1.ListOptions) (*v1alpha1.DynamicMemoryClaimList, error) {
	out := &v1alpha1.DynamicMemoryClaimList{}
	err := c.rest.Get().Resource(claims).VersionedParams(&opts, paramCodec).Do(ctx).Into(out)
	return out, err
}

// CreateClaim creates a DynamicMemoryClaim (its status is ignored by the apiserver).
func (c *Client) CreateClaim(ctx context.Context, obj *v1alpha1.DynamicMemoryClaim) (*v1alpha1.DynamicMemoryClaim, error) {
	out := &v1alpha1.DynamicMemoryClaim{}
	err := c.rest.Post().Namespace(obj.Namespace).Resource(claims).Body(obj).Do(ctx).Into(out)
	return out, err
}

// UpdateClaim replaces a DynamicMemoryClaim's metadata and spec.
func (c *Client) UpdateClaim(ctx context.Context, obj *v1alpha1.DynamicMemoryClaim) (*v1alpha1.DynamicMemoryClaim, error) {
	out := &v1alpha1.DynamicMemoryClaim{}
	err := c.rest.Put().Namespace(obj.Namespace).Resource(claims).Name(obj.Name).Body(obj).Do(ctx).Into(out)
	return out, err
}

// PatchClaimStatus patches the status subresource of a DynamicMemoryClaim.
func (c *Client) PatchClaimStatus(ctx context.Context, namespace, name string, pt types.PatchType, data []byte) (*v1alpha1.DynamicMemoryClaim, error) {
	out := &v1alpha1.DynamicMemoryClaim{}
	err := c.rest.Patch(pt).Namespace(namespace).Resource(claims).Name(name).SubResource("status").Body(data).Do(ctx).Into(out)
	return out, err
}

// DeleteClaim deletes a DynamicMemoryClaim.
func (c *Client) DeleteClaim(ctx context.Context, namespace, name string, opts metav1.DeleteOptions) error {
	return c.rest.Delete().Namespace(namespace).Resource(claims).Name(name).Body(&opts).Do(ctx).Error()
}

// ListPools lists DynamicMemoryPools.
func (c *Client) ListPools(ctx context.Context, opts metav1.ListOptions) (*v1alpha1.DynamicMemoryPoolList, error) {
	out := &v1alpha1.DynamicMemoryPoolList{}
	err := c.rest.Get().Resource(pools).VersionedParams(&opts, paramCodec).Do(ctx).Into(out)
	return out, err
}

// WatchPools watches DynamicMemoryPools.
func (c *Client) WatchPools(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return c.rest.Get().Resource(pools).VersionedParams(&opts, paramCodec).Watch(ctx)
}

// PatchPoolStatus patches the status subresource of a DynamicMemoryPool.
func (c *Client) PatchPoolStatus(ctx context.Context, name string, pt types.PatchType, data []byte) (*v1alpha1.DynamicMemoryPool, error) {
	out := &v1alpha1.DynamicMemoryPool{}
	err := c.rest.Patch(pt).Resource(pools).Name(name).SubResource("status").Body(data).Do(ctx).Into(out)
	return out, err
}
