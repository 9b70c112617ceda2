// Checks rendered Kubernetes manifests (`kubectl kustomize deployment/k8s` on stdin or in the file
// given): every object against the Kubernetes OpenAPI schema shipped by the npm package
// kubernetes-models (types, required fields, enums, formats), then the project's own rules:
// probes, resources and the security context on every container. Exit 1 on any finding.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

const text = readFileSync(process.argv[2] ?? 0, "utf8");
const problems = [];
let count = 0;

for (const doc of parseAllDocuments(text)) {
	if (doc.errors.length) {
		problems.push(...doc.errors.map(e => `YAML: ${e.message}`));
		continue;
	}
	const obj = doc.toJS();
	if (!obj) continue;
	count++;
	const { apiVersion, kind } = obj;
	const where = `${kind}/${obj.metadata?.name}`;
	// Core group objects live at kubernetes-models/v1/<Kind>, others at <group>/<version>/<Kind>.
	let Model;
	try {
		Model = (await import(`kubernetes-models/${apiVersion}/${kind}`))[kind];
	} catch {
		problems.push(`${where}: unknown apiVersion/kind ${apiVersion} ${kind}`);
		continue;
	}
	try {
		new Model(obj).validate();
	} catch (err) {
		problems.push(`${where}: ${err.message}`);
	}
	if (kind === "Deployment") {
		const pod = obj.spec.template.spec;
		if (!pod.securityContext?.runAsNonRoot) problems.push(`${where}: no runAsNonRoot`);
		if (typeof pod.securityContext?.runAsUser !== "number") problems.push(`${where}: no numeric runAsUser`);
		if (!(pod.terminationGracePeriodSeconds >= 15)) problems.push(`${where}: terminationGracePeriodSeconds < 15`);
		for (const c of pod.containers) {
			const at = `${where} container ${c.name}`;
			if (!c.livenessProbe || !c.readinessProbe) problems.push(`${at}: missing liveness/readiness probe`);
			for (const kind of ["requests", "limits"])
				for (const res of ["cpu", "memory"])
					if (!c.resources?.[kind]?.[res]) problems.push(`${at}: no resources.${kind}.${res}`);
			if (c.securityContext?.allowPrivilegeEscalation !== false) problems.push(`${at}: allowPrivilegeEscalation not false`);
			if (c.securityContext?.readOnlyRootFilesystem !== true) problems.push(`${at}: root filesystem not read-only`);
		}
	}
}

if (count === 0) problems.push("no object in the input");
for (const p of problems) console.error(`  ${p}`);
console.log(problems.length ? `FAILED: ${problems.length} problem(s) in ${count} objects` : `SUCCESS: ${count} objects valid`);
process.exit(problems.length ? 1 : 0);
