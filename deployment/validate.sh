#!/usr/bin/env bash
# Validates what deployment/ and docker-compose.yml describe, without a Docker engine or a
# Kubernetes cluster, with real tools (each prints its own verdict; any failure fails the script):
#
#   compose     Debian's docker-compose (1.29): `docker-compose config -q` parses and checks the
#               file against the Compose schema (installed with apt-get when missing)
#   prometheus  Debian's promtool (package prometheus): `promtool check config`, and the rules;
#               `promtool test rules` runs rules.test.yml (each alert fires when it should)
#   grafana     deployment/grafana/carsi.json: its structure (deployment/check-grafana.mjs), and
#               every panel query parsed by promtool (written out as recording rules)
#   k8s         Debian's kubectl (package kubernetes-client): `kubectl kustomize` renders
#               deployment/k8s; deployment/check-k8s.mjs checks every object against the
#               Kubernetes OpenAPI schemas of the npm package kubernetes-models, plus probes,
#               resources and security context
#   dockerfile  dockerfile-utils lint (npm, dev dependency): errors and warnings both fail
#   rabbitmq    definitions.json imported into a throwaway vhost of the local RabbitMQ (deleted
#               afterwards; skipped with a notice when no RabbitMQ answers), the app's queues
#               declared against its policies (deployment/check-rabbitmq.ts)
#
# promtool and kubectl are taken from their Debian packages with `apt-get download` and unpacked
# into $CARSI_TOOLS_DIR (no install: the prometheus package would start a Prometheus daemon and
# pull a dozen web libraries, and kubernetes-client would replace another kubectl on the PATH).
# The same Debian versions run on every machine. Needs `npm ci` first (node_modules).
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS="${CARSI_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/carsi-deploy-tools}"
failed=()
step() { printf '\n-- %s\n' "$*"; }
ran() { # name, then the command: records a failure instead of stopping
	local name=$1; shift
	if "$@"; then echo "   => $name: OK"; else echo "   => $name: FAILED"; failed+=("$name"); fi
}

apt_updated=
apt_update() { [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }; }

# Unpacks one Debian package into $TOOLS/<package>-<version> (once) and prints that directory.
debian_tool() { # package
	local pkg=$1 version dir
	version="$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ { print $2 }')"
	if [ -z "$version" ] || [ "$version" = "(none)" ]; then
		apt_update >&2
		version="$(apt-cache policy "$pkg" | awk '/Candidate:/ { print $2 }')"
	fi
	dir="$TOOLS/$pkg-${version//[^A-Za-z0-9.+~-]/_}"
	if [ ! -d "$dir/usr/bin" ]; then
		local tmp; tmp="$(mktemp -d)"
		if ! (cd "$tmp" && apt-get download "$pkg=$version" >/dev/null 2>&1); then
			# A stale package list names a version the mirror no longer has: refresh, then take its candidate.
			apt_update >&2
			version="$(apt-cache policy "$pkg" | awk '/Candidate:/ { print $2 }')"
			dir="$TOOLS/$pkg-${version//[^A-Za-z0-9.+~-]/_}"
			(cd "$tmp" && apt-get download "$pkg=$version" >/dev/null)
		fi
		mkdir -p "$dir.partial" && dpkg-deb -x "$tmp"/*.deb "$dir.partial" && rm -rf "$dir" && mv "$dir.partial" "$dir"
		rm -rf "$tmp"
	fi
	echo "$dir"
}

step "compose: docker-compose config"
if ! command -v docker-compose >/dev/null; then
	echo "installing Debian's docker-compose"
	apt_update && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
fi
echo "docker-compose $(docker-compose version --short)"
ran compose docker-compose -f docker-compose.yml --profile monitoring config -q

step "prometheus: promtool check config"
promtool="$(debian_tool prometheus)/usr/bin/promtool"
{ "$promtool" --version 2>&1 || true; } | sed -n 1p
ran prometheus "$promtool" check config deployment/prometheus/prometheus.yml
ran prometheus-rules "$promtool" test rules deployment/prometheus/rules.test.yml

step "grafana: dashboard JSON, its queries checked by promtool"
check_grafana() {
	local rules; rules="$(mktemp --suffix=.yml)"
	node deployment/check-grafana.mjs deployment/grafana/carsi.json "$rules" && "$promtool" check rules "$rules"
	local rc=$?
	rm -f "$rules"
	return "$rc"
}
ran grafana check_grafana

step "k8s: kubectl kustomize + kubernetes-models schemas"
kubectl="$(debian_tool kubernetes-client)/usr/bin/kubectl"
echo "kubectl $("$kubectl" version --client --short 2>/dev/null || "$kubectl" version --client | head -1), kubernetes-models $(node -p 'require("./node_modules/kubernetes-models/package.json").version')"
rendered="$(mktemp)"
check_k8s() { "$kubectl" kustomize deployment/k8s >"$rendered" && node deployment/check-k8s.mjs "$rendered"; }
ran k8s check_k8s
rm -f "$rendered"

step "dockerfile: dockerfile-utils lint"
echo "dockerfile-utils $(node -p 'require("./node_modules/dockerfile-utils/package.json").version')"
lint_dockerfile() {
	local out; out="$(npx --no-install dockerfile-utils lint deployment/Dockerfile 2>&1)" || { echo "$out"; return 1; }
	[ -z "$out" ] || { echo "$out"; return 1; }
	echo "deployment/Dockerfile: no error, no warning"
}
ran dockerfile lint_dockerfile

step "rabbitmq: definitions.json in a throwaway vhost"
check_rabbitmq() {
	node -e 'JSON.parse(require("fs").readFileSync("deployment/rabbitmq/definitions.json", "utf8"))' || return 1
	if ! command -v rabbitmqctl >/dev/null || ! rabbitmqctl -q status >/dev/null 2>&1; then
		echo "definitions.json parses; no local RabbitMQ answers, so it was not imported (skipped)"
		return 0
	fi
	echo "RabbitMQ $(rabbitmqctl -q version)"
	local vhost="carsi-validate-$$-$RANDOM" defs rc=0
	defs="$(mktemp)"
	chmod 644 "$defs" # read by the RabbitMQ server process, not by rabbitmqctl
	# Only the vhost and the policies, moved to the throwaway vhost: the users and the default
	# vhost of this RabbitMQ stay as they are.
	node -e '
		const d = require("./deployment/rabbitmq/definitions.json"), vhost = process.argv[1];
		process.stdout.write(JSON.stringify({ vhosts: [{ name: vhost }], policies: d.policies.map(p => ({ ...p, vhost })) }));
	' "$vhost" >"$defs"
	rabbitmqctl -q add_vhost "$vhost" >/dev/null
	{
		rabbitmqctl -q set_permissions -p "$vhost" guest ".*" ".*" ".*" >/dev/null &&
			rabbitmqctl -q import_definitions "$defs" >/dev/null &&
			rabbitmqctl -q list_policies -p "$vhost" | cut -f2,3,5 &&
			npx --no-install ts-node --transpile-only deployment/check-rabbitmq.ts "$vhost" "${CARSI_VALIDATE_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672}"
	} || rc=$?
	rabbitmqctl -q delete_vhost "$vhost" >/dev/null || true
	rm -f "$defs"
	return "$rc"
}
ran rabbitmq check_rabbitmq

echo
if [ "${#failed[@]}" -gt 0 ]; then
	echo "deployment validation FAILED: ${failed[*]}"
	exit 1
fi
echo "deployment validation: compose, prometheus, grafana, k8s, dockerfile, rabbitmq OK"
