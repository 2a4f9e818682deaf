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

// Command licenseheader checks that every Go, protobuf and shell source of the project,
// the Makefile and the Dockerfile begin with the Apache-2.0 notice of
// hack/boilerplate.go.txt (the notice the code generators write too), and with -fix adds
// it where it is missing.
//
//	go run ./hack/licenseheader        # make verify: names each file without the notice
//	go run ./hack/licenseheader -fix   # make license-headers: adds it
//
// The files are those git tracks or would track (untracked files not ignored), so a new
// file is checked before it is committed. Generated files are not edited: their
// generator must be given the notice (see `make generate`).
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

const (
	// boilerplateFile holds the notice as a Go block comment.
	boilerplateFile = "hack/boilerplate.go.txt"
	// fixCommand adds the notice; the check's error names it.
	fixCommand = "make license-headers"
)

func main() {
	fix := flag.Bool("fix", false, "add the notice to the files without it (generated files are only reported)")
	flag.Parse()
	if err := run(*fix); err != nil {
		fmt.Fprintln(os.Stderr, "licenseheader:", err)
		os.Exit(1)
	}
}

func run(fix bool) error {
	boilerplate, err := os.ReadFile(boilerplateFile)
	if err != nil {
		return fmt.Errorf("read the notice (run from the repository's root): %w", err)
	}
	h, err := newHeader(string(boilerplate))
	if err != nil {
		return fmt.Errorf("%s: %w", boilerplateFile, err)
	}
	files, err := projectFiles()
	if err != nil {
		return err
	}
	var missing, generated []string
	for _, name := range files {
		content, err := os.ReadFile(name)
		if os.IsNotExist(err) {
			continue // deleted in the work tree, not yet in the index
		}
		if err != nil {
			return err
		}
		s, ok := styleOf(name, content)
		if !ok || h.present(s, string(content)) {
			continue
		}
		switch {
		case isGenerated(content):
			generated = append(generated, name)
		case fix:
			if err := os.WriteFile(name, []byte(h.add(s, string(content))), 0o644); err != nil {
				return err
			}
			fmt.Println("licenseheader: added the notice to", name)
		default:
			missing = append(missing, name)
		}
	}
	var msgs []string
	if len(missing) > 0 {
		msgs = append(msgs, fmt.Sprintf("the license notice of %s is missing from %d files; run '%s' and commit:\n  %s",
			boilerplateFile, len(missing), fixCommand, strings.Join(missing, "\n  ")))
	}
	if len(generated) > 0 {
		msgs = append(msgs, fmt.Sprintf("%d generated files lack the license notice; give their generator %s (see 'make generate'), not the files:\n  %s",
			len(generated), boilerplateFile, strings.Join(generated, "\n  ")))
	}
	if len(msgs) > 0 {
		return fmt.Errorf("%s", strings.Join(msgs, "\n"))
	}
	return nil
}

// projectFiles lists the files git tracks or would track.
func projectFiles() ([]string, error) {
	out, err := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		return nil, fmt.Errorf("list the project's files with git ls-files: %w", err)
	}
	var files []string
	for _, f := range strings.Split(string(out), "\x00") {
		if f != "" {
			files = append(files, f)
		}
	}
	sort.Strings(files)
	return files, nil
}

// style is how a kind of file writes comments, and what must stay above the notice.
type style int

const (
	goStyle     style = iota // the boilerplate's block comment (line comments accepted); build constraints stay first
	protoStyle               // line comments: protoc-gen-go copies them into the generated Go
	hashStyle                // '#' comments; a shebang stays first
	dockerStyle              // '#' comments; parser directives stay first
)

// styleOf says how the notice is written in a file, and false for files it does not apply to.
func styleOf(name string, content []byte) (style, bool) {
	switch base := filepath.Base(name); {
	case strings.HasSuffix(base, ".go"):
		return goStyle, true
	case strings.HasSuffix(base, ".proto"):
		return protoStyle, true
	case base == "Dockerfile":
		return dockerStyle, true
	case base == "Makefile", strings.HasSuffix(base, ".sh"), bytes.HasPrefix(content, []byte("#!")):
		return hashStyle, true
	}
	return 0, false
}

// isGenerated follows Go's convention for generated files (go.dev/s/generatedcode).
func isGenerated(content []byte) bool {
	for _, line := range strings.Split(string(content), "\n") {
		if strings.HasPrefix(line, "// Code generated ") && strings.HasSuffix(line, " DO NOT EDIT.") {
			return true
		}
	}
	return false
}

// header is the notice, as the boilerplate's block comment and as its lines of text.
type header struct {
	block string   // the boilerplate, "/*" to "*/" and a newline
	text  []string // the lines between "/*" and "*/"
}

func newHeader(boilerplate string) (header, error) {
	lines := strings.Split(strings.TrimRight(boilerplate, "\n"), "\n")
	if len(lines) < 3 || lines[0] != "/*" || lines[len(lines)-1] != "*/" {
		return header{}, fmt.Errorf("want the notice as a block comment: a line \"/*\", the notice, a line \"*/\"")
	}
	return header{block: strings.Join(lines, "\n") + "\n", text: lines[1 : len(lines)-1]}, nil
}

// commented writes the notice as line comments with prefix ("//" or "#").
func (h header) commented(prefix string) string {
	var b strings.Builder
	for _, line := range h.text {
		b.WriteString(strings.TrimRight(prefix+" "+line, " "))
		b.WriteString("\n")
	}
	return b.String()
}

// present says whether the first comment after the lines that must stay first begins
// with the notice.
func (h header) present(s style, content string) bool {
	lines := strings.Split(content, "\n")
	rest := lines[preamble(s, lines):]
	for len(rest) > 0 && strings.TrimSpace(rest[0]) == "" {
		rest = rest[1:]
	}
	var comment []string
	switch {
	case s == goStyle && len(rest) > 0 && rest[0] == "/*":
		for _, line := range rest[1:] {
			if line == "*/" {
				break
			}
			comment = append(comment, line)
		}
	case s == goStyle || s == protoStyle:
		comment = lineComment(rest, "//")
	default:
		comment = lineComment(rest, "#")
	}
	if len(comment) < len(h.text) {
		return false
	}
	for i, want := range h.text {
		if strings.TrimRight(comment[i], " \t") != strings.TrimRight(want, " \t") {
			return false
		}
	}
	return true
}

// lineComment returns the text of the leading run of line comments.
func lineComment(lines []string, prefix string) []string {
	var text []string
	for _, line := range lines {
		if !strings.HasPrefix(line, prefix) {
			break
		}
		line = strings.TrimPrefix(line, prefix)
		text = append(text, strings.TrimPrefix(line, " "))
	}
	return text
}

// add puts the notice after the lines that must stay first, with a blank line after it.
func (h header) add(s style, content string) string {
	lines := strings.SplitAfter(content, "\n")
	n := preamble(s, strings.Split(content, "\n"))
	notice := h.block
	switch s {
	case protoStyle:
		notice = h.commented("//")
	case hashStyle, dockerStyle:
		notice = h.commented("#")
	}
	return strings.Join(lines[:n], "") + notice + "\n" + strings.Join(lines[n:], "")
}

// preamble counts the leading lines that must stay above the notice: a Go file's build
// constraints and the blank line after them, a script's shebang, a Dockerfile's parser
// directives.
func preamble(s style, lines []string) int {
	n := 0
	switch s {
	case goStyle:
		for n < len(lines) && (strings.HasPrefix(lines[n], "//go:build") || strings.HasPrefix(lines[n], "// +build")) {
			n++
		}
		if n > 0 && n < len(lines) && strings.TrimSpace(lines[n]) == "" {
			n++
		}
	case hashStyle:
		if len(lines) > 0 && strings.HasPrefix(lines[0], "#!") {
			n = 1
		}
	case dockerStyle:
		for n < len(lines) && isDockerDirective(lines[n]) {
			n++
		}
	}
	return n
}

// isDockerDirective matches a Dockerfile parser directive, "# syntax=...", "# escape=...", "# check=...".
func isDockerDirective(line string) bool {
	key, _, ok := strings.Cut(strings.TrimSpace(strings.TrimPrefix(line, "#")), "=")
	if !strings.HasPrefix(line, "#") || !ok {
		return false
	}
	switch strings.ToLower(strings.TrimSpace(key)) {
	case "syntax", "escape", "check":
		return true
	}
	return false
}
