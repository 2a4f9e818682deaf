package main

import (
	"flag"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestOptionsValidate(t *testing.T) {
	dir := t.TempDir()
	valid := []string{"--node-name=node-1", "--memservice-address=memservice:8443", "--memservice-ca=ca.crt",
		"--memservice-cert=draplugin.crt", "--memservice-key=draplugin.key", "--plugin-data-dir=" + dir, "--registrar-dir=" + dir}
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"all set", valid, nil},
		{"nothing set", []string{"--plugin-data-dir=/nonexistent", "--registrar-dir=" + dir}, []string{
			"--node-name (or NODE_NAME) is required", "memory service client: address is required",
			"--plugin-data-dir=/nonexistent: must be an existing directory",
		}},
		{"empty CDI dir", append(append([]string{}, valid...), "--cdi-dir="), []string{"--cdi-dir is required"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("NODE_NAME", "")
			var o options
			fs := flag.NewFlagSet("dra-plugin", flag.ContinueOnError)
			o.addFlags(fs)
			require.NoError(t, fs.Parse(tc.args))
			err := o.validate()
			if tc.want == nil {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}
