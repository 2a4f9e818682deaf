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

package hostmem

import (
	"os"
	"path/filepath"
)

// FS is the part of the file system the sysfs backend uses. Paths are absolute
// host paths (/sys/...); the implementation maps them under its root. Tests wrap
// it to make the kernel's answers (EBUSY, EINVAL) happen on a fake tree.
type FS interface {
	ReadFile(name string) ([]byte, error)
	// WriteFile writes data to an existing file, as one write(2), like echo does
	// for sysfs attributes.
	WriteFile(name string, data []byte) error
	ReadDir(name string) ([]os.DirEntry, error)
	Readlink(name string) (string, error)
	Stat(name string) (os.FileInfo, error)
}

// DirFS is the host file system below Root ("/" on a real host).
type DirFS struct {
	Root string
}

var _ FS = DirFS{}

func (f DirFS) path(name string) string { return filepath.Join(f.Root, name) }

func (f DirFS) ReadFile(name string) ([]byte, error) { return os.ReadFile(f.path(name)) }

func (f DirFS) WriteFile(name string, data []byte) error {
	file, err := os.OpenFile(f.path(name), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	if _, err := file.Write(data); err != nil {
		_ = file.Close()
		return err
	}
	return file.Close()
}

func (f DirFS) ReadDir(name string) ([]os.DirEntry, error) { return os.ReadDir(f.path(name)) }

func (f DirFS) Readlink(name string) (string, error) { return os.Readlink(f.path(name)) }

func (f DirFS) Stat(name string) (os.FileInfo, error) { return os.Stat(f.path(name)) }
