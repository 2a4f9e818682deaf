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

// Package nodeimage writes container images of one static binary as OCI image layout
// archives, which containerd imports (ctr images import). The local cluster's real
// node runs them: no registry is reachable from where it runs, so its pause image and
// its test workload are built here, from this repository.
package nodeimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"time"
)

// Media types of the OCI image specification.
const (
	mediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	mediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	mediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar"
)

// imageNameAnnotation names the image containerd creates on import.
const imageNameAnnotation = "io.containerd.image.name"

// epoch is the time of every file in an image, so that an archive depends only on its
// inputs.
var epoch = time.Unix(0, 0).UTC()

// Image is a container image of one static binary.
type Image struct {
	// Name is the image reference, e.g. localhost/dynamic-memory/pause:v1.
	Name string
	// Binary is the file put into the image as /<base name of Binary>, mode 0755.
	Binary string
	// Args follow the binary in the image's entrypoint.
	Args []string
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// blob is content addressed by its sha256 digest.
type blob struct {
	data      []byte
	mediaType string
}

func (b blob) digest() string {
	sum := sha256.Sum256(b.data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func (b blob) descriptor() descriptor {
	return descriptor{MediaType: b.mediaType, Digest: b.digest(), Size: int64(len(b.data))}
}

// WriteArchive writes img as a tar of an OCI image layout (oci-layout, index.json,
// blobs/sha256/...) to w.
func WriteArchive(w io.Writer, img Image) error {
	bin, err := os.ReadFile(img.Binary)
	if err != nil {
		return fmt.Errorf("image %s: %w", img.Name, err)
	}
	entry := "/" + path.Base(img.Binary)
	var layerTar bytes.Buffer
	if err := writeTar(&layerTar, []tarFile{{name: entry[1:], mode: 0o755, data: bin}}); err != nil {
		return fmt.Errorf("image %s: layer: %w", img.Name, err)
	}
	layer := blob{data: layerTar.Bytes(), mediaType: mediaTypeLayer}

	config, err := marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"created":      epoch,
		"config":       map[string]any{"Entrypoint": append([]string{entry}, img.Args...)},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{layer.digest()}},
	}, mediaTypeConfig)
	if err != nil {
		return err
	}
	manifest, err := marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaTypeManifest,
		"config":        config.descriptor(),
		"layers":        []descriptor{layer.descriptor()},
	}, mediaTypeManifest)
	if err != nil {
		return err
	}
	ref := manifest.descriptor()
	ref.Annotations = map[string]string{imageNameAnnotation: img.Name}
	index, err := marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaTypeIndex,
		"manifests":     []descriptor{ref},
	}, mediaTypeIndex)
	if err != nil {
		return err
	}

	files := []tarFile{
		{name: "oci-layout", mode: 0o644, data: []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{name: "index.json", mode: 0o644, data: index.data},
	}
	for _, b := range []blob{layer, config, manifest} {
		files = append(files, tarFile{name: "blobs/sha256/" + b.digest()[len("sha256:"):], mode: 0o644, data: b.data})
	}
	if err := writeTar(w, files); err != nil {
		return fmt.Errorf("image %s: %w", img.Name, err)
	}
	return nil
}

func marshal(v any, mediaType string) (blob, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return blob{}, fmt.Errorf("encode %s: %w", mediaType, err)
	}
	return blob{data: data, mediaType: mediaType}, nil
}

type tarFile struct {
	name string
	mode int64
	data []byte
}

func writeTar(w io.Writer, files []tarFile) error {
	tw := tar.NewWriter(w)
	for _, f := range files {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: f.mode, Size: int64(len(f.data)), ModTime: epoch, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	return tw.Close()
}
