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

package main

import (
	"net/url"
	"regexp"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilversion "k8s.io/apimachinery/pkg/util/version"
	"sigs.k8s.io/krew/pkg/constants"
	"sigs.k8s.io/krew/pkg/index"
)

var (
	// pluginNamePattern is the form krew-index gives plugin names.
	pluginNamePattern = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	sha256Pattern     = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// validate checks what krew requires of a manifest before it installs from it (krew's
// own validation is internal to its module).
func validate(p index.Plugin) error {
	var errs field.ErrorList
	if p.APIVersion != constants.CurrentAPIVersion {
		errs = append(errs, field.NotSupported(field.NewPath("apiVersion"), p.APIVersion, []string{constants.CurrentAPIVersion}))
	}
	if p.Kind != constants.PluginKind {
		errs = append(errs, field.NotSupported(field.NewPath("kind"), p.Kind, []string{constants.PluginKind}))
	}
	name := field.NewPath("metadata", "name")
	switch {
	case !pluginNamePattern.MatchString(p.Name):
		errs = append(errs, field.Invalid(name, p.Name, "want lower-case letters, digits and '-'"))
	case p.Name == constants.KrewPluginName:
		errs = append(errs, field.Forbidden(name, "is krew's own name"))
	}
	spec := field.NewPath("spec")
	if !strings.HasPrefix(p.Spec.Version, "v") {
		errs = append(errs, field.Invalid(spec.Child("version"), p.Spec.Version, "want a semantic version with a leading 'v', e.g. v0.1.0"))
	} else if _, err := utilversion.ParseSemantic(strings.TrimPrefix(p.Spec.Version, "v")); err != nil {
		errs = append(errs, field.Invalid(spec.Child("version"), p.Spec.Version, "want a semantic version with a leading 'v', e.g. v0.1.0: "+err.Error()))
	}
	if p.Spec.ShortDescription == "" {
		errs = append(errs, field.Required(spec.Child("shortDescription"), "krew shows it in `kubectl krew search`"))
	}
	if len(p.Spec.Platforms) == 0 {
		errs = append(errs, field.Required(spec.Child("platforms"), "want one platform per archive"))
	}
	selectors := map[string]int{}
	for i, pl := range p.Spec.Platforms {
		path := spec.Child("platforms").Index(i)
		if u, err := url.Parse(pl.URI); err != nil || u.Scheme != "https" || u.Host == "" {
			errs = append(errs, field.Invalid(path.Child("uri"), pl.URI, "want the https address of the archive"))
		}
		if !sha256Pattern.MatchString(pl.Sha256) {
			errs = append(errs, field.Invalid(path.Child("sha256"), pl.Sha256, "want the archive's sha256, 64 lower-case hex digits"))
		}
		if pl.Bin == "" {
			errs = append(errs, field.Required(path.Child("bin"), "the plugin's executable in the archive"))
		}
		for j, f := range pl.Files {
			if f.From == "" || f.To == "" {
				errs = append(errs, field.Required(path.Child("files").Index(j), "want both from and to"))
			}
		}
		if pl.Selector == nil {
			errs = append(errs, field.Required(path.Child("selector"), "want matchLabels os and arch"))
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(pl.Selector)
		if err != nil {
			errs = append(errs, field.Invalid(path.Child("selector"), pl.Selector, err.Error()))
			continue
		}
		if j, dup := selectors[sel.String()]; dup {
			errs = append(errs, field.Duplicate(path.Child("selector"), "the same platforms as "+spec.Child("platforms").Index(j).String()))
		}
		selectors[sel.String()] = i
	}
	return errs.ToAggregate()
}
