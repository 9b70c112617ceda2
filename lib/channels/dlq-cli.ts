/**
 * Dead-letter operations for operators (README "Dead letters"):
 *
 *   npm run dlq -- list   [--group g] [--limit n] [--json]
 *   npm run dlq -- replay <messageId> | --all  [--group g] [--wait ms]
 *
 * It reads TRANSPORTER, NAMESPACE and DATA_DIR like every node (lib/config.ts). With TRANSPORTER
 * set it works on RabbitMQ directly (lib/channels/amqp-dlq.ts): list reads the DLQs without
 * consuming; replay republishes into the original group's queue, then acknowledges the dead copy.
 * Without it (embedded default) it reads `${DATA_DIR}/channels.sqlite`; a replay needs the
 * handlers of the running process, so the CLI flags the rows and waits for that process to replay
 * them (it polls the table every 2 s; or use the REPL: `call $channels.dlqReplay --messageId <id>`).
 */
import amqp from "amqplib";
import { loadConfig } from "../config";
import { listAmqpDeadLetters, replayAmqpDeadLetters } from "./amqp-dlq";
import { DeadLetterStore, rowToDeadLetter, type DeadLetterRow } from "./dead-letter-store";
import { knownGroups } from "./names";
import type { DeadLetter, ReplayResult } from "./types";

interface Args {
	command: string;
	messageId?: string;
	all: boolean;
	group?: string;
	limit?: number;
	json: boolean;
	waitMs: number;
}

const USAGE = `usage:
  npm run dlq -- list   [--group <group>] [--limit <n>] [--json]
  npm run dlq -- replay <messageId> | --all  [--group <group>] [--wait <ms>]`;

class UsageError extends Error {}

function parseArgs(argv: string[]): Args {
	const args: Args = { command: argv[0] ?? "", all: false, json: false, waitMs: 15_000 };
	const value = (i: number, flag: string) => {
		const v = argv[i + 1];
		if (v === undefined || v.startsWith("--")) throw new UsageError(`${flag} needs a value`);
		return v;
	};
	for (let i = 1; i < argv.length; i++) {
		const a = argv[i];
		if (a === "--all") args.all = true;
		else if (a === "--json") args.json = true;
		else if (a === "--group") args.group = value(i++, a);
		else if (a === "--limit") args.limit = Number(value(i++, a));
		else if (a === "--wait") args.waitMs = Number(value(i++, a));
		else if (a.startsWith("--")) throw new UsageError(`unknown option ${a}`);
		else if (args.command === "replay" && args.messageId === undefined) args.messageId = a;
		else throw new UsageError(`unexpected argument ${a}`);
	}
	if (args.command !== "list" && args.command !== "replay") throw new UsageError(`unknown command "${args.command}"`);
	if (args.command === "replay" && !args.all === !args.messageId) throw new UsageError("replay needs a messageId or --all (not both)");
	if (args.limit !== undefined && !(Number.isInteger(args.limit) && args.limit > 0)) throw new UsageError("--limit must be a positive integer");
	if (!(Number.isInteger(args.waitMs) && args.waitMs >= 0)) throw new UsageError("--wait must be an integer >= 0");
	return args;
}

function printList(list: DeadLetter[], json: boolean): void {
	if (json) {
		console.log(JSON.stringify(list, null, 2));
		return;
	}
	for (const d of list)
		console.log(`${d.messageId ?? "(no id)"}  group=${d.group} event=${d.event} attempts=${d.attempts ?? "?"} deadAt=${d.deadAt ?? "?"}  error=${JSON.stringify(d.error)}`);
	console.log(`${list.length} dead letter(s)`);
}

function printReplay(res: ReplayResult, waiting = 0): number {
	for (const r of res.replayed) console.log(`replayed ${r.messageId} (${r.group}, ${r.event})`);
	for (const f of res.failed) console.log(`failed   ${f.messageId} (${f.group}, ${f.event}): ${f.error}`);
	if (res.replayed.length === 0 && res.failed.length === 0 && waiting === 0) {
		console.log("no dead letter matches");
		return 1;
	}
	return res.failed.length > 0 ? 1 : 0;
}


async function onRabbitmq(url: string, prefix: string, args: Args): Promise<number> {
	const conn = await amqp.connect(url);
	conn.on("error", () => undefined);
	try {
		const groups = args.group ? [args.group] : knownGroups();
		if (args.command === "list") {
			printList(await listAmqpDeadLetters(conn, { prefix, groups, limit: args.limit }), args.json);
			return 0;
		}
		return printReplay(await replayAmqpDeadLetters(conn, { prefix, groups, messageId: args.messageId, all: args.all }));
	} finally {
		await conn.close().catch(() => undefined);
	}
}

async function onSqlite(dataDir: string, args: Args): Promise<number> {
	const store = DeadLetterStore.inDir(dataDir);
	await store.open();
	try {
		if (args.command === "list") {
			printList((await store.select({ group: args.group, limit: args.limit })).map(row => rowToDeadLetter(row)), args.json);
			return 0;
		}
		const ids = await store.requestReplay({ group: args.group, messageId: args.messageId, all: args.all });
		if (ids.length === 0) {
			console.log("no dead letter matches");
			return 1;
		}
		const asked = new Map((await store.select({ ids })).map(r => [r.id, r]));
		console.log(`asked the running process to replay ${ids.length} dead letter(s); waiting up to ${args.waitMs} ms`);
		const deadline = Date.now() + args.waitMs;
		let pending = ids;
		let rows: DeadLetterRow[] = [];
		while (Date.now() < deadline) {
			rows = await store.select({ ids });
			pending = rows.filter(r => r.replay_requested_at !== null).map(r => r.id);
			if (pending.length === 0) break;
			await new Promise(r => setTimeout(r, 200));
		}
		const left = new Map(rows.map(r => [r.id, r]));
		const res: ReplayResult = { replayed: [], failed: [] };
		let waiting = 0;
		for (const id of ids) {
			const row = left.get(id);
			const was = asked.get(id);
			if (!row) res.replayed.push({ messageId: was?.message_id ?? `row ${id}`, group: was?.grp ?? "?", event: was?.event ?? "?" });
			else if (row.replay_requested_at === null) res.failed.push({ messageId: row.message_id, group: row.grp, event: row.event, error: row.error ?? "" });
			else waiting++;
		}
		const code = printReplay(res, waiting);
		if (waiting > 0) {
			console.log(`${waiting} still waiting: no running process picked them up yet (they are replayed when it runs)`);
			return 1;
		}
		return code;
	} finally {
		await store.close();
	}
}

export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
	let args: Args;
	try {
		args = parseArgs(argv);
	} catch (err) {
		if (err instanceof UsageError) {
			console.error(`${err.message}\n${USAGE}`);
			return 2;
		}
		throw err;
	}
	// This tool signs nothing: the JWT_SECRET a distributed node requires is irrelevant here.
	const config = loadConfig({ ...env, JWT_SECRET: env.JWT_SECRET || "unused-by-the-dlq-cli" });
	return config.transporter ? onRabbitmq(config.transporter, config.namespace, args) : onSqlite(config.dataDir, args);
}

if (require.main === module) {
	main(process.argv.slice(2)).then(
		code => process.exit(code),
		err => {
			console.error(`dlq: ${err instanceof Error ? err.message : String(err)}`);
			process.exit(1);
		},
	);
}
