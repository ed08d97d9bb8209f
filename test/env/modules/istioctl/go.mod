// Builds istioctl, to run `istioctl analyze` offline on what aimesh renders. Istio's
// repository has no tagged Go module versions; this pseudo-version is its 1.28 line.
module aimesh.test/env/istioctl

go 1.26.0

require istio.io/istio v0.0.0-20260827124520-eed52ebb66ad
