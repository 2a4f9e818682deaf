module github.com/dynamicmemory/kube-dynamic-memory/draplugin

go 1.26.0

require github.com/dynamicmemory/kube-dynamic-memory/api v0.0.0

replace github.com/dynamicmemory/kube-dynamic-memory/api => ../api
