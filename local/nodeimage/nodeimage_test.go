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

package nodeimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestWriteArchiveIsAnOCILayoutOfTheBinary reads the archive back as an image
// importer does: index.json names the image and points at the manifest, every blob
// matches its digest, the layer holds the binary as the entrypoint, and the same
// inputs give the same bytes.
func TestWriteArchiveIsAnOCILayoutOfTheBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "probe")
	require.NoError(t, os.WriteFile(bin, []byte("#!binary"), 0o755))
	img := Image{Name: "localhost/test/probe:local", Binary: bin, Args: []string{"-v"}}
	var a, b bytes.Buffer
	require.NoError(t, WriteArchive(&a, img))
	require.NoError(t, WriteArchive(&b, img))
	assert.Equal(t, a.Bytes(), b.Bytes(), "reproducible")

	files := map[string][]byte{}
	tr := tar.NewReader(&a)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		data, err := io.ReadAll(tr)
		require.NoError(t, err)
		files[hdr.Name] = data
	}
	blobOf := func(d descriptor) []byte {
		t.Helper()
		data, ok := files["blobs/sha256/"+d.Digest[len("sha256:"):]]
		require.True(t, ok, "blob %s in the archive", d.Digest)
		sum := sha256.Sum256(data)
		require.Equal(t, d.Digest, "sha256:"+hex.EncodeToString(sum[:]))
		require.EqualValues(t, d.Size, len(data))
		return data
	}
	assert.JSONEq(t, `{"imageLayoutVersion":"1.0.0"}`, string(files["oci-layout"]))
	var index struct{ Manifests []descriptor }
	require.NoError(t, json.Unmarshal(files["index.json"], &index))
	require.Len(t, index.Manifests, 1)
	assert.Equal(t, img.Name, index.Manifests[0].Annotations[imageNameAnnotation])
	var manifest struct {
		Config descriptor
		Layers []descriptor
	}
	require.NoError(t, json.Unmarshal(blobOf(index.Manifests[0]), &manifest))
	var config struct {
		Config struct{ Entrypoint []string }
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	require.NoError(t, json.Unmarshal(blobOf(manifest.Config), &config))
	assert.Equal(t, []string{"/probe", "-v"}, config.Config.Entrypoint)
	require.Len(t, manifest.Layers, 1)
	assert.Equal(t, []string{manifest.Layers[0].Digest}, config.RootFS.DiffIDs, "an uncompressed layer's diff ID is its digest")

	lr := tar.NewReader(bytes.NewReader(blobOf(manifest.Layers[0])))
	hdr, err := lr.Next()
	require.NoError(t, err)
	assert.Equal(t, "probe", hdr.Name)
	assert.EqualValues(t, 0o755, hdr.Mode)
	content, err := io.ReadAll(lr)
	require.NoError(t, err)
	assert.Equal(t, "#!binary", string(content))
}

func TestWriteArchiveNamesAMissingBinary(t *testing.T) {
	err := WriteArchive(io.Discard, Image{Name: "localhost/x:1", Binary: "/nonexistent/pause"})
	require.ErrorContains(t, err, "image localhost/x:1")
	require.ErrorContains(t, err, "/nonexistent/pause")
}
