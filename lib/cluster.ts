/**
 * `npm run cluster`: the distributed topology on this machine's PostgreSQL, Redis and RabbitMQ,
 * one moleculer-runner process per service, as README "Local cluster" describes.
 *
 * It creates each service's database if missing, starts the nodes with TRANSPORTER, CACHER, one
 * shared JWT_SECRET and each its own database URL (every other variable passes through), prefixes
 * each line a node prints with `[service]`, and prints the gateway's URL once /ready answers 200.
 * SIGINT, SIGTERM or SIGHUP stops every node with SIGTERM (moleculer-runner then stops its broker:
 * in-flight requests finish, consumers stop, connections close) and kills those still running
 * after CLUSTER_STOP_TIMEOUT_MS. It exits 0 when every node exited with 0. A node that exits on
 * its own stops the others, and the cluster exits 1.
 */
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import readline from "node:readline";
import type { Readable, Writable } from "node:stream";
import { Client } from "pg";
import { ConfigError, DATABASE_SERVICES, loadClusterConfig, maskUrl, type ClusterConfig, type DatabaseServiceName, type ServiceName } from "./config";

const ROOT = path.resolve(__dirname, "../..");
const RUNNER = path.join(path.dirname(require.resolve("moleculer")), "bin/moleculer-runner.js");
const COLORS = [36, 32, 33, 35, 34, 96]; // cyan, green, yellow, magenta, blue, bright cyan
const useColor = process.stdout.isTTY === true;

interface Node {
	service: ServiceName;
	proc: ChildProcess;
	exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
	done: boolean;
}

let width = "cluster".length;
function prefix(name: string, index: number): string {
	const label = `[${name}]`.padEnd(width + 2);
	return useColor ? `\x1b[${COLORS[index % COLORS.length]}m${label}\x1b[0m` : label;
}
const own = () => prefix("cluster", COLORS.length - 1);
const say = (line: string) => process.stdout.write(`${own()} ${line}\n`);
const complain = (line: string) => process.stderr.write(`${own()} ${line}\n`);

function pipeLines(from: Readable, to: Writable, label: string): void {
	readline.createInterface({ input: from, crlfDelay: Infinity }).on("line", line => to.write(`${label} ${line}\n`));
}

function isDatabaseService(s: ServiceName): s is DatabaseServiceName {
	return (DATABASE_SERVICES as readonly string[]).includes(s);
}

/** Creates the PostgreSQL databases of `services` that do not exist yet. */
async function ensureDatabases(config: ClusterConfig, services: DatabaseServiceName[]): Promise<void> {
	for (const service of services) {
		const url = config.databaseUrls[service];
		if (!/^postgres(ql)?:\/\//i.test(url)) continue; // e.g. sqlite: the service creates its file
		const target = new URL(url);
		const name = decodeURIComponent(target.pathname.slice(1));
		// CLUSTER_PG_URL for a database on that server; the `postgres` database of any other server.
		const admin = new URL(config.pgUrl);
		if (target.host !== admin.host || target.username !== admin.username) {
			admin.href = url;
			admin.pathname = "/postgres";
		}
		const client = new Client({ connectionString: admin.toString(), connectionTimeoutMillis: 5000 });
		client.on("error", () => undefined);
		try {
			await client.connect();
		} catch (err) {
			throw new ConfigError(`PostgreSQL is not reachable at ${maskUrl(admin.toString())}: ${(err as Error).message}`);
		}
		try {
			const exists = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [name]);
			if (exists.rowCount === 0) {
				await client.query(`CREATE DATABASE "${name.replace(/"/g, '""')}"`).catch((err: { code?: string }) => {
					if (err.code !== "42P04") throw err; // created meanwhile by someone else: fine
				});
				say(`created the database ${name} for ${service}`);
			}
		} catch (err) {
			throw new ConfigError(`cannot create the database ${name} for ${service}: ${(err as Error).message}`);
		} finally {
			await client.end().catch(() => undefined);
		}
	}
}

function nodeEnv(config: ClusterConfig, service: ServiceName, index: number): NodeJS.ProcessEnv {
	const env: NodeJS.ProcessEnv = {
		...process.env,
		SERVICEDIR: path.join(ROOT, "dist/services"),
		SERVICES: service,
		TRANSPORTER: config.transporter,
		CACHER: config.cacher,
		JWT_SECRET: config.jwt.secret,
	};
	for (const s of DATABASE_SERVICES) delete env[`${s.toUpperCase()}_DATABASE_URL`];
	if (isDatabaseService(service)) env[`${service.toUpperCase()}_DATABASE_URL`] = config.databaseUrls[service];
	if (service === "api") env.PORT = String(config.port);
	else delete env.PORT;
	// One value for five processes would collide: each node gets its own.
	if (process.env.NODE_ID) env.NODE_ID = `${process.env.NODE_ID}-${service}`;
	if (process.env.METRICS_PORT) env.METRICS_PORT = String(Number(process.env.METRICS_PORT) + index);
	return env;
}

function startNode(config: ClusterConfig, service: ServiceName, index: number): Node {
	// Its own process group: a Ctrl-C in the terminal reaches only this process, which then stops
	// each node once (a second signal would make moleculer-runner stop its broker twice).
	const proc = spawn(process.execPath, [RUNNER, "--config", path.join(ROOT, "dist/moleculer.config.js")], {
		cwd: process.cwd(),
		env: nodeEnv(config, service, index),
		stdio: ["ignore", "pipe", "pipe"],
		detached: true,
	});
	const label = prefix(service, index);
	pipeLines(proc.stdout!, process.stdout, label);
	pipeLines(proc.stderr!, process.stderr, label);
	const node: Node = {
		service,
		proc,
		done: false,
		exited: new Promise(resolve =>
			proc.on("exit", (code, signal) => {
				node.done = true;
				resolve({ code, signal });
			}),
		),
	};
	proc.on("error", err => complain(`${service}: ${err.message}`));
	if (proc.pid !== undefined) say(`started ${service} (pid ${proc.pid})`);
	return node;
}

async function waitReady(port: number, stopped: () => boolean): Promise<void> {
	const url = `http://127.0.0.1:${port}/ready`;
	while (!stopped()) {
		const ok = await fetch(url, { signal: AbortSignal.timeout(2000) })
			.then(res => res.status === 200)
			.catch(() => false);
		if (ok) {
			if (!stopped()) say(`ready: the gateway answers on http://localhost:${port}`);
			return;
		}
		await new Promise(r => setTimeout(r, 500));
	}
}

async function main(): Promise<number> {
	const config = loadClusterConfig();
	width = Math.max(width, ...config.services.map(s => s.length));
	if (config.jwt.generated)
		complain("JWT_SECRET is not set: the nodes share a random secret generated for this run, and tokens end with it.");

	let stopping = false;
	const nodes: Node[] = [];
	let resolveStop: () => void = () => undefined;
	const stopRequested = new Promise<void>(resolve => (resolveStop = resolve));
	let killed = false;

	const killAll = (signal: NodeJS.Signals) => {
		for (const n of nodes) if (!n.done) n.proc.kill(signal);
	};
	const stopAll = (why: string) => {
		if (stopping) return;
		stopping = true;
		say(`${why}: stopping ${nodes.filter(n => !n.done).map(n => n.service).join(", ") || "nothing"}`);
		killAll("SIGTERM");
		const timer = setTimeout(() => {
			const left = nodes.filter(n => !n.done).map(n => n.service);
			complain(`still running after ${config.stopTimeoutMs} ms, killed: ${left.join(", ")}`);
			killed = true;
			killAll("SIGKILL");
		}, config.stopTimeoutMs);
		timer.unref();
		resolveStop();
	};
	for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
		process.on(signal, () => {
			if (stopping) {
				complain(`${signal} again: killing every node now`);
				killed = true;
				killAll("SIGKILL");
			} else stopAll(`got ${signal}`);
		});
	}
	// Whatever happens to this process, no node is left behind.
	process.on("exit", () => killAll("SIGKILL"));

	const dbServices = config.services.filter(isDatabaseService);
	await ensureDatabases(config, dbServices);
	if (stopping) return 1;

	say(
		`starting ${config.services.join(", ")} on ${maskUrl(config.transporter)} and ${maskUrl(config.cacher)}` +
			(dbServices.length ? `, databases ${dbServices.map(s => maskUrl(config.databaseUrls[s])).join(", ")}` : ""),
	);
	config.services.forEach((service, i) => nodes.push(startNode(config, service, i)));

	let unexpected = false;
	for (const node of nodes) {
		void node.exited.then(({ code, signal }) => {
			const how = signal ? `by ${signal}` : `with code ${code}`;
			if (stopping) say(`${node.service} exited ${how}`);
			else {
				unexpected = true;
				complain(`${node.service} exited ${how} on its own`);
				stopAll(`${node.service} is gone`);
			}
		});
	}
	if (config.services.includes("api")) void waitReady(config.port, () => stopping);

	await stopRequested;
	const results = await Promise.all(nodes.map(n => n.exited));
	const clean = !unexpected && !killed && results.every(r => r.code === 0);
	say(clean ? "every node stopped" : "stopped, not cleanly");
	return clean ? 0 : 1;
}

main().then(
	code => process.exit(code),
	err => {
		complain(err instanceof ConfigError ? err.message : (err as Error).stack ?? String(err));
		process.exit(1);
	},
);
