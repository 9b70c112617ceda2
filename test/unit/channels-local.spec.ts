/**
 * The in-process channel adapter of the embedded default (lib/channels/local-adapter.ts): a
 * publish resolves once every consumer group handled the event or parked it in the SQLite
 * dead-letter table, and rejects (for the outbox to try again) when a group is not there.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Context, type ServiceBroker } from "moleculer";
import sqlite3 from "sqlite3";
import { main as dlqCli } from "../../lib/channels/dlq-cli";
import type { LocalMessage } from "../../lib/channels/local-adapter";
import type { DeadLetter, ReplayResult } from "../../lib/channels/types";
import { Recorder, channelsNode, consumerService, event, uniqueNamespace, type ChannelsNodeOptions } from "../support/channels";

let dataDir: string;
const brokers: ServiceBroker[] = [];

function node(extra: Partial<ChannelsNodeOptions> & { consumerGroups: Record<string, string[]> }): { broker: ServiceBroker; ns: string } {
	const ns = uniqueNamespace("loc");
	const broker = channelsNode({ namespace: ns, dataDir, maxRetries: 3, retryDelayMs: 10, replayPollMs: 0, ...extra });
	brokers.push(broker);
	return { broker, ns };
}

function callerContext(broker: ServiceBroker, meta: Record<string, unknown>, requestID: string): Context {
	return Context.create(broker, undefined as never, {}, { meta, requestID });
}

/** The rows of the dead-letter table, read with sqlite3 as an operator would. */
function deadLetterRows(): Promise<Array<Record<string, any>>> {
	return new Promise((resolve, reject) => {
		const db = new sqlite3.Database(path.join(dataDir, "channels.sqlite"), sqlite3.OPEN_READONLY, err => {
			if (err) return reject(err);
			db.all("SELECT * FROM dead_letters ORDER BY id", (err2: Error | null, rows: Array<Record<string, any>>) => {
				db.close();
				if (err2) reject(err2);
				else resolve(rows);
			});
		});
	});
}

beforeEach(() => {
	dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "carsi-channels-"));
});

afterEach(async () => {
	for (const b of brokers.splice(0)) await b.stop().catch(() => undefined);
	fs.rmSync(dataDir, { recursive: true, force: true });
});

describe("the in-process channel adapter", () => {
	it("delivers an event to one consumer of every group and resolves after each handled it", async () => {
		const { broker } = node({ consumerGroups: { "order.created": ["notifications", "products"] } });
		const notif = new Recorder();
		const prod = new Recorder();
		broker.createService(consumerService("notifier-a", "notifications", ["order.created"], notif));
		broker.createService(consumerService("notifier-b", "notifications", ["order.created"], notif));
		broker.createService(consumerService("stock", "products", ["order.created"], prod));
		await broker.start();

		const e = event({ order: { id: "o-1" } });
		await broker.sendToChannel("order.created", e, { messageId: e.eventId });
		// Resolved means handled: no waiting needed.
		expect(notif.all.map(d => d.payload)).toEqual([e]);
		expect(prod.all.map(d => d.payload)).toEqual([e]);
		expect((notif.all[0].raw as LocalMessage).messageId).toBe(e.eventId);
	});

	it("retries a failing handler with backoff and resolves once it succeeded, with headers, meta and requestID on every attempt", async () => {
		const { broker } = node({ consumerGroups: { "order.created": ["notifications"] }, maxRetries: 5 });
		const rec = new Recorder();
		broker.createService(
			consumerService("notifier", "notifications", ["order.created"], rec, d => {
				if (rec.of(d.eventId).length <= 2) throw new Error("not yet");
			}),
		);
		await broker.start();

		const e = event();
		await broker.sendToChannel("order.created", e, {
			messageId: e.eventId,
			headers: { "x-trace": "t-2" },
			ctx: callerContext(broker, { tenant: "t-1" }, "req-2"),
		});
		const tries = rec.of(e.eventId);
		expect(tries.map(d => (d.raw as LocalMessage).attempt)).toEqual([1, 2, 3]);
		expect(tries.map(d => (d.raw as LocalMessage).headers["x-redelivered-count"])).toEqual([undefined, 1, 2]);
		for (const d of tries) {
			expect((d.raw as LocalMessage).headers).toMatchObject({ "x-trace": "t-2", $requestID: "req-2" });
			expect(d.meta).toEqual({ tenant: "t-1" });
			expect(d.requestID).toBe("req-2");
		}
		expect(await deadLetterRows()).toEqual([]);
	});

	it("parks an event in the dead-letter table with all its headers after N attempts, and the publish resolves", async () => {
		const { broker, ns } = node({ consumerGroups: { "order.created": ["notifications", "products"] }, maxRetries: 3 });
		const notif = new Recorder();
		const prod = new Recorder();
		broker.createService(
			consumerService("notifier", "notifications", ["order.created"], notif, () => {
				throw new TypeError("template missing");
			}),
		);
		broker.createService(consumerService("stock", "products", ["order.created"], prod));
		await broker.start();

		const e = event();
		await broker.sendToChannel("order.created", e, {
			messageId: e.eventId,
			headers: { "x-trace": "t-3" },
			ctx: callerContext(broker, { tenant: "t-7" }, "req-3"),
		});
		expect(notif.of(e.eventId)).toHaveLength(3);
		expect(prod.of(e.eventId)).toHaveLength(1);

		const rows = await deadLetterRows();
		expect(rows).toHaveLength(1);
		const row = rows[0];
		expect(row).toMatchObject({ message_id: e.eventId, grp: "notifications", event: "order.created", channel: `${ns}.order.created`, attempts: 3, error: "template missing" });
		expect(JSON.parse(Buffer.from(row.payload).toString())).toEqual(e);
		const headers = JSON.parse(row.headers);
		expect(headers).toMatchObject({
			"x-trace": "t-3",
			$requestID: "req-3",
			"x-original-channel": `${ns}.order.created`,
			"x-original-group": "notifications",
			"x-error-message": "template missing",
			"x-error-name": "TypeError",
			"x-attempts": 3,
		});
		expect(JSON.parse(Buffer.from(headers.$meta, "base64").toString())).toEqual({ tenant: "t-7" });
		expect(Number.isNaN(Date.parse(headers["x-death-time"]))).toBe(false);
	});

	it("waits for a declared group that subscribes later, then delivers to it", async () => {
		const { broker } = node({ consumerGroups: { "user.registered": ["notifications"] }, subscribeWaitMs: 20_000 });
		await broker.start();
		const rec = new Recorder();
		const e = event();
		let settled = false;
		const publishing = broker.sendToChannel("user.registered", e, { messageId: e.eventId }).finally(() => (settled = true));
		await new Promise(r => setTimeout(r, 50));
		expect(settled).toBe(false);

		await broker.createService(consumerService("notifier", "notifications", ["user.registered"], rec));
		await publishing;
		expect(rec.all.map(d => d.payload)).toEqual([e]);
	});

	it("rejects after the bound when a declared group never subscribes (the groups that are there still get it)", async () => {
		const { broker } = node({ consumerGroups: { "order.created": ["notifications", "products"] }, subscribeWaitMs: 100 });
		const notif = new Recorder();
		broker.createService(consumerService("notifier", "notifications", ["order.created"], notif));
		await broker.start();

		const e = event();
		await expect(broker.sendToChannel("order.created", e, { messageId: e.eventId })).rejects.toMatchObject({ type: "CHANNEL_NO_CONSUMER" });
		expect(notif.of(e.eventId)).toHaveLength(1);
		expect(await deadLetterRows()).toEqual([]);
	});

	it("keeps a publish made before the broker started: it waits, and is delivered once the consumers subscribed", async () => {
		const { broker } = node({ consumerGroups: { "order.created": ["notifications"] }, subscribeWaitMs: 20_000 });
		const rec = new Recorder();
		broker.createService(consumerService("notifier", "notifications", ["order.created"], rec));
		const e = event();
		const publishing = broker.sendToChannel("order.created", e, { messageId: e.eventId });
		await broker.start();
		await publishing;
		expect(rec.all.map(d => d.payload)).toEqual([e]);
	});

	it("refuses an event that no consumer group receives, and a publish after stop", async () => {
		const { broker } = node({ consumerGroups: { "order.created": ["notifications"] } });
		broker.createService(consumerService("notifier", "notifications", ["order.created"], new Recorder()));
		await broker.start();
		await expect(broker.sendToChannel("nobody.listens", event())).rejects.toMatchObject({ type: "CHANNEL_UNROUTABLE" });
		await broker.stop();
		await expect(broker.sendToChannel("order.created", event())).rejects.toMatchObject({ type: "CHANNELS_STOPPING" });
	});

	it("lists a dead letter with $channels.dlqList and replays it once with $channels.dlqReplay", async () => {
		const { broker } = node({ consumerGroups: { "order.created": ["notifications"] }, maxRetries: 2 });
		const rec = new Recorder();
		let fixed = false;
		broker.createService(
			consumerService("notifier", "notifications", ["order.created"], rec, () => {
				if (!fixed) throw new Error("down");
			}),
		);
		await broker.start();
		const e = event();
		await broker.sendToChannel("order.created", e, { messageId: e.eventId, headers: { "x-trace": "t-8" } });
		expect(rec.of(e.eventId)).toHaveLength(2);

		const listed = (await broker.call("$channels.dlqList", { group: "notifications" })) as DeadLetter[];
		expect(listed.map(d => [d.messageId, d.event, d.attempts, d.error, d.payload])).toEqual([[e.eventId, "order.created", 2, "down", e]]);

		fixed = true;
		const res = (await broker.call("$channels.dlqReplay", { messageId: e.eventId })) as ReplayResult;
		expect(res).toEqual({ replayed: [{ messageId: e.eventId, group: "notifications", event: "order.created" }], failed: [] });
		expect(rec.of(e.eventId)).toHaveLength(3);
		const replayed = rec.of(e.eventId)[2].raw as LocalMessage;
		expect(replayed.headers).toMatchObject({ "x-trace": "t-8", "x-replay-count": 1 });
		expect(replayed.headers).not.toHaveProperty("x-attempts");
		expect(await deadLetterRows()).toEqual([]);
		// Nothing left to replay: a second replay finds nothing.
		expect(await broker.call("$channels.dlqReplay", { all: true })).toEqual({ replayed: [], failed: [] });
	});

	it("replays what `npm run dlq -- replay` asks for from another process, through the running one", async () => {
		const { broker, ns } = node({ consumerGroups: { "order.created": ["notifications"] }, maxRetries: 1, replayPollMs: 50 });
		const rec = new Recorder();
		let fixed = false;
		broker.createService(
			consumerService("notifier", "notifications", ["order.created"], rec, () => {
				if (!fixed) throw new Error("down");
			}),
		);
		await broker.start();
		const e = event();
		await broker.sendToChannel("order.created", e, { messageId: e.eventId });
		expect(await deadLetterRows()).toHaveLength(1);

		const out: string[] = [];
		const log = jest.spyOn(console, "log").mockImplementation((...a: unknown[]) => void out.push(a.join(" ")));
		try {
			expect(await dlqCli(["list"], { DATA_DIR: dataDir, NAMESPACE: ns })).toBe(0);
			expect(out.join("\n")).toContain(`${e.eventId}  group=notifications event=order.created attempts=1`);
			fixed = true;
			expect(await dlqCli(["replay", e.eventId], { DATA_DIR: dataDir, NAMESPACE: ns })).toBe(0);
			expect(out.join("\n")).toContain(`replayed ${e.eventId} (notifications, order.created)`);
		} finally {
			log.mockRestore();
		}
		expect(rec.of(e.eventId)).toHaveLength(2);
		expect(await deadLetterRows()).toEqual([]);
	});
});
