package main

import (
	"flag"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestOptionsValidate(t *testing.T) {
	valid := []string{"--node-name=node-1", "--memservice-address=memservice:8443", "--memservice-ca=ca.crt",
		"--memservice-cert=agent.crt", "--memservice-key=agent.key"}
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"all set", valid, nil},
		{"region bases", append(append([]string{}, valid...), "--region-base=pool-a=0x1080000000", "--region-base=pool-b=4294967296", "--default-region-base=0x100000000"), nil},
		{"nothing set", nil, []string{"--node-name (or NODE_NAME) is required", "memory service client: address is required"}},
		{"bad values", append(append([]string{}, valid...), "--host-backend=qemu", "--default-region-base=zz", "--offline-attempts=0", "--heartbeat-interval=0s"), []string{
			`--host-backend="qemu": must be sysfs or simulated`, `--default-region-base: "zz" is not a physical address`,
			"--offline-attempts=0: must be at least 1", "--heartbeat-interval=0s: must be positive",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("NODE_NAME", "")
			var o options
			fs := flag.NewFlagSet("node-agent", flag.ContinueOnError)
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

func TestRegionBaseFlagRejectsBadValues(t *testing.T) {
	var r regionBases
	for _, v := range []string{"pool-a", "=0x10", "pool-a=-1", "pool-a=12G"} {
		assert.Error(t, r.Set(v), v)
	}
	require.NoError(t, r.Set("pool-a=0x10"))
	assert.Equal(t, regionBases{"pool-a": 16}, r)
}
