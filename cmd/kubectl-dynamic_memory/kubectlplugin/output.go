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

package kubectlplugin

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/printers"
	"k8s.io/kubectl/pkg/cmd/get"
)

// printFlags are the output flags of the get and top commands, kubectl get's own:
// -o json|yaml|wide|name|jsonpath=...|custom-columns=...|go-template=..., --no-headers,
// --show-labels, -L and --template. Sorting is the commands' own (by namespace and
// name), so --sort-by is left out.
type printFlags struct {
	flags *get.PrintFlags
}

func newPrintFlags() *printFlags {
	f := get.NewGetPrintFlags()
	f.HumanReadableFlags.SortBy = nil
	f.HumanReadableFlags.ShowKind = nil
	return &printFlags{flags: f}
}

func (f *printFlags) addFlags(cmd *cobra.Command) {
	f.flags.AddFlags(cmd)
}

// format is the -o value.
func (f *printFlags) format() string {
	return *f.flags.OutputFormat
}

// human reports whether the output is a table (the default or -o wide), which the
// commands build, rather than the objects themselves.
func (f *printFlags) human() bool {
	template := f.flags.TemplateFlags.TemplateArgument
	return (f.format() == "" || f.format() == "wide") && (template == nil || *template == "")
}

// wide reports whether -o wide asked for the extra columns.
func (f *printFlags) wide() bool {
	return f.format() == "wide"
}

// printer returns the printer the flags ask for; withNamespace adds the NAMESPACE
// column of tables. A bad -o is a one-line error naming the formats.
func (f *printFlags) printer(withNamespace bool) (printers.ResourcePrinter, error) {
	if withNamespace {
		if err := f.flags.EnsureWithNamespace(); err != nil {
			return nil, err
		}
	}
	p, err := f.flags.ToPrinter()
	if genericclioptions.IsNoCompatiblePrinterError(err) {
		return nil, oneLine(fmt.Sprintf("unsupported output format %q for -o: use one of %s", f.format(), strings.Join(f.flags.AllowedFormats(), ", ")))
	}
	if err != nil {
		return nil, oneLine(fmt.Sprintf("-o %s: %v", f.format(), err))
	}
	return p, nil
}

// output prints what a get or top command found: the table for human output, else
// the objects.
type output struct {
	flags   *printFlags
	printer printers.ResourcePrinter
}

// newOutput checks the flags and makes their printer.
func newOutput(flags *printFlags, withNamespace bool) (*output, error) {
	p, err := flags.printer(withNamespace)
	if err != nil {
		return nil, err
	}
	return &output{flags: flags, printer: p}, nil
}

// print writes table, or objects when the flags ask for objects.
func (o *output) print(w io.Writer, table *metav1.Table, objects runtime.Object) error {
	if o.flags.human() {
		return o.printer.PrintObj(table, w)
	}
	return o.printer.PrintObj(objects, w)
}

// writer is where print writes to w, and the function that flushes it. Tables go
// through one tab writer for all the rows printed, so that the rows of a watch line up
// with the list before them; objects go straight to w.
func (o *output) writer(w io.Writer) (io.Writer, func() error) {
	if !o.flags.human() {
		return w, func() error { return nil }
	}
	tw := printers.GetNewTabWriter(w)
	return tw, tw.Flush
}

// column is a table column that every output shows; wideColumn one that only -o wide
// shows.
func column(name string) metav1.TableColumnDefinition {
	return metav1.TableColumnDefinition{Name: name, Type: "string"}
}

func wideColumn(name string) metav1.TableColumnDefinition {
	return metav1.TableColumnDefinition{Name: name, Type: "string", Priority: 1}
}

// tableRow is one row of a table: the cells, and the object it shows (for --show-labels,
// -L and the NAMESPACE column).
func tableRow(obj runtime.Object, cells ...string) metav1.TableRow {
	row := metav1.TableRow{Object: runtime.RawExtension{Object: obj}, Cells: make([]any, len(cells))}
	for i, c := range cells {
		row.Cells[i] = c
	}
	return row
}
