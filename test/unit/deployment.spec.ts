/**
 * docker-compose.yml, the Kubernetes manifests (deployment/k8s) and API.md's "Configuration" table
 * name the same services and the same variables: every service of lib/config has a compose service
 * and a Deployment, and every API.md variable that applies to a service reaches that service in both.
 */
import fs from "node:fs";
import path from "node:path";
import { parse, parseAllDocuments } from "yaml";
import { DATABASE_SERVICES, SERVICE_NAMES, type ServiceName } from "../../lib/config";

const root = path.resolve(__dirname, "../..");
// shared/ sits beside the clone (../shared/API.md from the repository root).
const apiMd = fs.readFileSync(path.resolve(root, "../shared/API.md"), "utf8");

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** The variables of API.md's "Configuration" table, `<SERVICE>_DATABASE_URL` spelled out per service. */
function apiMdVariables(): string[] {
	const section = apiMd.split(/^## /m).find(s => s.startsWith("Configuration"));
	if (!section) throw new Error('API.md has no "Configuration" section');
	const vars = new Set<string>();
	for (const line of section.split("\n")) {
		if (!line.startsWith("| `")) continue;
		const first = line.split("|")[1];
		for (const [, name] of first.matchAll(/`([^`]+)`/g)) {
			if (name === "<SERVICE>_DATABASE_URL") for (const svc of DATABASE_SERVICES) vars.add(`${svc.toUpperCase()}_DATABASE_URL`);
			else if (/^[A-Z][A-Z0-9_]*[A-Z0-9]$/.test(name)) vars.add(name); // not the `USERS_`-style prefixes
		}
	}
	return [...vars].sort();
}

/** Which services a variable applies to (a variable named here for no service applies to all of them). */
function appliesTo(variable: string): ServiceName[] {
	const db = /^([A-Z]+)_DATABASE_URL$/.exec(variable);
	if (db) return [db[1].toLowerCase() as ServiceName];
	switch (variable) {
		case "PORT":
			return ["api"];
		case "METRICS_PORT": // the gateway serves /metrics on PORT; every other node needs its own port
			return SERVICE_NAMES.filter(s => s !== "api");
		case "ADMIN_EMAIL":
		case "ADMIN_PASSWORD":
			return ["users"];
		default:
			return [...SERVICE_NAMES];
	}
}

function composeEnv(): Map<string, Set<string>> {
	const compose = parse(fs.readFileSync(path.join(root, "docker-compose.yml"), "utf8"), { merge: true }) as Obj;
	const out = new Map<string, Set<string>>();
	for (const [name, svc] of Object.entries(compose.services as Obj)) {
		if (svc.image !== "carsi:latest") continue; // postgres, redis, rabbitmq, prometheus
		const env = Array.isArray(svc.environment)
			? (svc.environment as string[]).map(e => e.split("=")[0])
			: Object.keys(svc.environment ?? {});
		out.set(name, new Set(env));
	}
	return out;
}

function k8sObjects(): Obj[] {
	const dir = path.join(root, "deployment/k8s");
	const kustomization = parse(fs.readFileSync(path.join(dir, "kustomization.yaml"), "utf8")) as Obj;
	return (kustomization.resources as string[]).flatMap(file =>
		parseAllDocuments(fs.readFileSync(path.join(dir, file), "utf8"))
			.map(d => d.toJS() as Obj)
			.filter(Boolean),
	);
}

/** Every variable a Deployment's container gets: env, plus every key of the ConfigMaps/Secrets of its envFrom. */
function k8sEnv(objects: Obj[]): Map<string, Set<string>> {
	const keysOf = (kind: string, name: string): string[] => {
		const o = objects.find(x => x.kind === kind && x.metadata.name === name);
		if (!o) throw new Error(`envFrom names a missing ${kind} ${name}`);
		return Object.keys({ ...o.data, ...o.stringData });
	};
	const out = new Map<string, Set<string>>();
	for (const d of objects.filter(o => o.kind === "Deployment")) {
		const [c] = d.spec.template.spec.containers as Obj[];
		const vars = new Set<string>((c.env ?? []).map((e: Obj) => e.name as string));
		for (const from of (c.envFrom ?? []) as Obj[]) {
			if (from.configMapRef) keysOf("ConfigMap", from.configMapRef.name).forEach(k => vars.add(k));
			if (from.secretRef) keysOf("Secret", from.secretRef.name).forEach(k => vars.add(k));
		}
		out.set(d.metadata.name, vars);
	}
	return out;
}

describe("deployment: compose, Kubernetes manifests and API.md agree", () => {
	const variables = apiMdVariables();
	const compose = composeEnv();
	const objects = k8sObjects();
	const k8s = k8sEnv(objects);

	it("reads API.md's configuration table", () => {
		expect(variables).toEqual(expect.arrayContaining(["SERVICES", "TRANSPORTER", "JWT_SECRET", "USERS_DATABASE_URL", "NOTIFICATIONS_DATABASE_URL"]));
	});

	it("has one compose service and one Deployment + Service per service of lib/config", () => {
		const services = objects.filter(o => o.kind === "Service").map(o => o.metadata.name);
		expect([...compose.keys()].sort()).toEqual([...SERVICE_NAMES].sort());
		expect([...k8s.keys()].sort()).toEqual([...SERVICE_NAMES].sort());
		expect(services.sort()).toEqual([...SERVICE_NAMES].sort());
	});

	it.each(SERVICE_NAMES.map(s => [s]))("gives %s every API.md variable that applies to it, in compose and in Kubernetes", svc => {
		const expected = variables.filter(v => appliesTo(v).includes(svc)).sort();
		expect(expected.filter(v => !compose.get(svc)?.has(v))).toEqual([]);
		expect(expected.filter(v => !k8s.get(svc)?.has(v))).toEqual([]);
	});

	it("gives a database URL only to the service that owns it", () => {
		for (const svc of SERVICE_NAMES) {
			const foreign = (vars: Set<string> | undefined) =>
				[...(vars ?? [])].filter(v => v.endsWith("_DATABASE_URL") && v !== `${svc.toUpperCase()}_DATABASE_URL`);
			expect([svc, foreign(compose.get(svc))]).toEqual([svc, []]);
			expect([svc, foreign(k8s.get(svc))]).toEqual([svc, []]);
		}
	});

	it("runs SERVICES=<name> in each compose service and Deployment", () => {
		const doc = parse(fs.readFileSync(path.join(root, "docker-compose.yml"), "utf8"), { merge: true }) as Obj;
		for (const svc of SERVICE_NAMES) {
			expect(doc.services[svc].environment.SERVICES).toBe(svc);
			const d = objects.find(o => o.kind === "Deployment" && o.metadata.name === svc)!;
			const env = d.spec.template.spec.containers[0].env as Obj[];
			expect(env.find(e => e.name === "SERVICES")?.value).toBe(svc);
		}
	});

	it("probes the gateway on /health and /ready, and every other node on METRICS_PORT's /health and /ready", () => {
		for (const d of objects.filter(o => o.kind === "Deployment")) {
			const c = d.spec.template.spec.containers[0];
			if (d.metadata.name === "api") {
				expect([c.livenessProbe.httpGet.path, c.readinessProbe.httpGet.path]).toEqual(["/health", "/ready"]);
				expect(c.ports[0].containerPort).toBe(3000);
			} else {
				const port = Number(c.env.find((e: Obj) => e.name === "METRICS_PORT").value);
				expect([c.startupProbe.httpGet.path, c.livenessProbe.httpGet.path, c.readinessProbe.httpGet.path]).toEqual(["/health", "/health", "/ready"]);
				expect(c.ports[0].containerPort).toBe(port);
			}
		}
	});

	it("scrapes every service with Prometheus on the port compose gives it", () => {
		const prom = parse(fs.readFileSync(path.join(root, "deployment/prometheus/prometheus.yml"), "utf8")) as Obj;
		const targets = (prom.scrape_configs as Obj[]).flatMap(j => (j.static_configs as Obj[]).flatMap(s => s.targets as string[]));
		const doc = parse(fs.readFileSync(path.join(root, "docker-compose.yml"), "utf8"), { merge: true }) as Obj;
		const expected = SERVICE_NAMES.map(s => `${s}:${s === "api" ? doc.services.api.environment.PORT : doc.services[s].environment.METRICS_PORT}`);
		expect(targets.sort()).toEqual(expected.sort());
	});

	it("has autoscalers for api and products", () => {
		const hpas = objects.filter(o => o.kind === "HorizontalPodAutoscaler").map(o => o.spec.scaleTargetRef.name);
		expect(hpas.sort()).toEqual(["api", "products"]);
	});
});
