#!/usr/bin/env bash
# Offline checks of deploy/ and the CI workflow: yamllint, hadolint, every
# kustomization rendered and validated against the Kubernetes API schemas,
# and every Terraform and dashboard file parsed. Needs python3 and kubectl;
# installs the other tools into .venv at the repository root. Exits non-zero
# on the first problem.
set -euo pipefail

cd "$(dirname "$0")/.."

# The Kubernetes version of the EKS cluster (deploy/terraform/variables.tf).
KUBERNETES_VERSION=1.34.0

# Custom resources of the Prometheus Operator. kubernetes-validate has no
# schema for them and only warns, so they are dropped before validation;
# yamllint still checks their files.
CRD_KINDS=ServiceMonitor,PrometheusRule

VENV=.venv

step() {
    printf '\n== %s\n' "$*"
}

# Runs kubernetes-validate in strict mode. With --quiet it prints only
# warnings and failures, so any output fails the check: a warning such as a
# missing schema means an object was not validated.
validate() {
    local output
    if ! output=$("$VENV/bin/kubernetes-validate" --strict --quiet \
        --kubernetes-version "$KUBERNETES_VERSION" "$@" 2>&1); then
        printf '%s\n' "$output" >&2
        echo "error: kubernetes-validate rejected $*" >&2
        exit 1
    fi
    if [[ -n $output ]]; then
        printf '%s\n' "$output" >&2
        echo "error: kubernetes-validate warned about $*; every object must validate" >&2
        exit 1
    fi
    echo "  valid: $*"
}

step "tools in $VENV"
if [[ ! -x $VENV/bin/python ]]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r deploy/requirements-check.txt
command -v kubectl >/dev/null || {
    echo "error: kubectl is not installed; it renders the kustomizations" >&2
    exit 1
}

step "yamllint"
"$VENV/bin/yamllint" --strict -c deploy/yamllint.yaml deploy .github
echo "  clean"

step "hadolint"
"$VENV/bin/hadolint" deploy/Dockerfile
echo "  clean: deploy/Dockerfile"

step "kustomizations, rendered and validated for Kubernetes $KUBERNETES_VERSION"
rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
for dir in deploy/k8s/base deploy/k8s/monitoring deploy/k8s/overlays/*/; do
    dir=${dir%/}
    name=${dir#deploy/k8s/}
    name=${name//\//-}
    kubectl kustomize "$dir" >"$rendered/$name.yaml"
    "$VENV/bin/python" deploy/check_files.py manifests --skip-kinds "$CRD_KINDS" \
        "$rendered/$name.yaml" "$rendered/$name.core.yaml"
    validate "$rendered/$name.core.yaml"
done
validate deploy/k8s/base/secret.template.yaml

step "Terraform files, parsed"
"$VENV/bin/python" deploy/check_files.py hcl deploy/terraform/*.tf

step "dashboards, parsed"
"$VENV/bin/python" deploy/check_files.py json deploy/k8s/monitoring/dashboards/*.json

printf '\ndeploy checks passed\n'
