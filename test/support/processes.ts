/**
 * Nodes as separate OS processes, started the way users start them: moleculer-runner on the
 * built code (`npm run build` first) with the environment of API.md.
 */
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { CONSUMER_GROUPS } from "../../lib/events";
import { channelsAmqpResources, deleteAmqpResources, deleteChannelsAmqpResources, moleculerAmqpResources } from "./amqp";
import { cachePrefix, deleteKeysWithPrefix } from "./redis";

export { testPorts } from "./ports";

const ROOT = path.resolve(__dirname, "../..");
const RUNNER = path.join(ROOT, "node_modules/moleculer/bin/moleculer-runner.js");

export interface NodeProcess {
	name: string;
	proc: ChildProcess;
	/** Everything the process printed so far. */
	output(): string;
	/** Resolves with the exit code. */
	exited: Promise<number | null>;
	stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export function startProcess(name: string, env: Record<string, string>): NodeProcess {
	const proc = spawn(process.execPath, [RUNNER, "--config", "dist/moleculer.config.js"], {
		cwd: ROOT,
		env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", SERVICEDIR: "dist/services", LOG_LEVEL: "info", ...env },
		stdio: ["ignore", "pipe", "pipe"],
	});
	let out = "";
	proc.stdout!.on("data", d => (out += d));
	proc.stderr!.on("data", d => (out += d));
	const exited = new Promise<number | null>(resolve => proc.on("exit", code => resolve(code)));
	return {
		name,
		proc,
		output: () => out,
		exited,
		async stop(signal: NodeJS.Signals = "SIGTERM") {
			if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
			return exited;
		},
	};
}

/** Waits until the node has started all its services; fails with its output if it exits first. */
export async function waitStarted(node: NodeProcess, timeoutMs = 30_000): Promise<void> {
	const deadline = Date.now() + timeoutMs;
	while (!/ServiceBroker with \d+ service\(s\) started successfully/.test(node.output())) {
		if (node.proc.exitCode !== null) throw new Error(`${node.name} exited with ${node.proc.exitCode}:\n${node.output()}`);
		if (Date.now() > deadline) throw new Error(`${node.name} did not start within ${timeoutMs} ms:\n${node.output()}`);
		await new Promise(r => setTimeout(r, 100));
	}
}

/**
 * Short timers for suites that kill nodes or wait for recovery: the outbox polled every 200 ms
 * (a killed node's events taken by another node's poll 1 s after their commit),
 * reservations swept after 1.5 s, channel retries after 100 ms, a 5 s request timeout, and the
 * broker options moleculer-runner reads from the environment, so that a killed node is given up
 * after 3 s instead of 8 and no request is routed to it for long.
 */
export const QUICK_RECOVERY_ENV: Record<string, string> = {
	OUTBOX_POLL_MS: "200",
	OUTBOX_HANDOFF_MS: "1000",
	RESERVATION_TTL_MS: "1500",
	RESERVATION_SWEEP_MS: "300",
	CHANNEL_RETRY_DELAY_MS: "100",
	REQUEST_TIMEOUT_MS: "5000",
	HEARTBEATINTERVAL: "1",
	HEARTBEATTIMEOUT: "3",
};

/**
 * What node processes of `namespace` left on the servers, once they are stopped: the transporter's
 * queues and exchanges of every node that printed its ID, the business events' queues and
 * exchanges, and the cache keys. (Killed nodes never delete their own.)
 */
export async function deleteProcessResources(namespace: string, spawned: NodeProcess[]): Promise<void> {
	const nodeIDs = spawned.map(n => /Node ID: (\S+)/.exec(n.output())?.[1]).filter((id): id is string => !!id);
	await deleteAmqpResources(moleculerAmqpResources(namespace, nodeIDs), namespace);
	await deleteChannelsAmqpResources(channelsAmqpResources(namespace, CONSUMER_GROUPS), namespace);
	await deleteKeysWithPrefix(cachePrefix(namespace));
}
