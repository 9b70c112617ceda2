/**
 * Nodes as separate OS processes, started the way users start them: moleculer-runner on the
 * built code (`npm run build` first) with the environment of API.md.
 */
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";

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
