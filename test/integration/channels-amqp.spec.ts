/**
 * Durable business events on real RabbitMQ (lib/channels, ConfirmingAmqpAdapter): the five ways
 * the stock @moleculer/channels AMQP adapter loses events, each closed and shown here, plus
 * retries, dead letters, replay and a consumer killed mid-batch.
 *
 * Every test has its own namespace (so its own exchanges and queues) and deletes all of them at the
 * end. The brokers are small standalone ones: the channels middleware and tiny consumer services.
 */
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import amqp, { type ChannelModel, type GetMessage } from "amqplib";
import { Context, type ServiceBroker } from "moleculer";
import { replayAmqpDeadLetters } from "../../lib/channels/amqp-dlq";
import type { ConfirmingAmqpAdapter } from "../../lib/channels/amqp-adapter";
import { DELIVERY_LIMIT, QUORUM_QUEUE, RETRY_QUEUE, channelName, dlqName, mainQueueName, mainQueueOptions, retryName } from "../../lib/channels/names";
import type { DeadLetter, ReplayResult } from "../../lib/channels/types";
import {
	channelsAmqpResources,
	deleteChannelsAmqpResources,
	queueExists,
	recordChannelsResources,
	type AmqpResources,
} from "../support/amqp";
import { Recorder, channelsNode, consumerService, event, uniqueNamespace, type ChannelsNodeOptions } from "../support/channels";
import { SERVERS, requireServers } from "../support/servers";
import { TcpProxy } from "../support/tcp-proxy";
import { sleep, waitFor } from "../support/wait";

const ROOT = path.resolve(__dirname, "../..");

/** The brokers, child processes and RabbitMQ objects of one test, removed after it. */
class Rig {
	readonly ns = uniqueNamespace("chq");
	readonly brokers: ServiceBroker[] = [];
	readonly children: ChildProcess[] = [];
	readonly closers: Array<() => Promise<void>> = [];
	private readonly resources: AmqpResources = { queues: new Set(), exchanges: new Set() };

	constructor(readonly groups: Record<string, string[]>) {}

	node(extra: Partial<ChannelsNodeOptions> = {}): ServiceBroker {
		const broker = channelsNode({ amqpUrl: SERVERS.rabbitmq, namespace: this.ns, consumerGroups: this.groups, ...extra });
		this.brokers.push(broker);
		return broker;
	}

	channel(event: string): string {
		return channelName(this.ns, event);
	}

	queue(group: string, event: string): string {
		return mainQueueName(group, this.channel(event));
	}

	dlq(group: string): string {
		return dlqName(group, this.ns);
	}

	retry(group: string): string {
		return retryName(group, this.ns);
	}

	async cleanup(): Promise<void> {
		for (const child of this.children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
		for (const broker of this.brokers) {
			await broker.stop().catch(() => undefined);
			recordChannelsResources(broker, this.resources);
		}
		for (const close of this.closers) await close();
		const expected = channelsAmqpResources(this.ns, this.groups);
		for (const q of expected.queues) this.resources.queues.add(q);
		for (const x of expected.exchanges) this.resources.exchanges.add(x);
		await deleteChannelsAmqpResources(this.resources, this.ns);
	}
}

let inspect: ChannelModel | undefined;
let rig: Rig | undefined;

function newRig(groups: Record<string, string[]>): Rig {
	rig = new Rig(groups);
	return rig;
}

/** Ready messages of a queue, on a throwaway channel. */
async function messageCount(queue: string): Promise<number> {
	const ch = await inspect!.createChannel();
	ch.on("error", () => undefined);
	try {
		return (await ch.checkQueue(queue)).messageCount;
	} finally {
		await ch.close().catch(() => undefined);
	}
}

/** The message at the head of a queue, looked at and given back (nack with requeue). */
async function peek(queue: string): Promise<GetMessage> {
	const ch = await inspect!.createChannel();
	ch.on("error", () => undefined);
	try {
		const msg = await ch.get(queue, { noAck: false });
		if (!msg) throw new Error(`queue ${queue} is empty`);
		ch.nack(msg, false, true);
		return msg;
	} finally {
		await ch.close().catch(() => undefined);
	}
}

function adapterOf(broker: ServiceBroker): ConfirmingAmqpAdapter {
	return broker.channelAdapter as ConfirmingAmqpAdapter;
}

/** A context whose requestID and meta the middleware puts into the message headers. */
function callerContext(broker: ServiceBroker, meta: Record<string, unknown>, requestID: string): Context {
	return Context.create(broker, undefined as never, {}, { meta, requestID });
}

function runCli(ns: string, args: string[]): Promise<{ code: number | null; out: string }> {
	return new Promise((resolve, reject) => {
		const child = spawn(process.execPath, ["-r", "ts-node/register/transpile-only", "lib/channels/dlq-cli.ts", ...args], {
			cwd: ROOT,
			env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", TRANSPORTER: SERVERS.rabbitmq, NAMESPACE: ns },
			stdio: ["ignore", "pipe", "pipe"],
		});
		let out = "";
		child.stdout.on("data", d => (out += d));
		child.stderr.on("data", d => (out += d));
		child.on("error", reject);
		child.on("exit", code => resolve({ code, out }));
	});
}

beforeAll(async () => {
	await requireServers("rabbitmq");
	inspect = await amqp.connect(SERVERS.rabbitmq);
	inspect.on("error", () => undefined);
});

afterEach(async () => {
	const r = rig;
	rig = undefined;
	await r?.cleanup();
});

afterAll(async () => {
	await inspect?.close().catch(() => undefined);
});

describe("durable business events over RabbitMQ", () => {
	it("keeps an event published before its consumer group's queue ever existed, persistent, and delivers it when the consumer starts", async () => {
		const r = newRig({ "order.created": ["notifications", "products"] });
		const producer = r.node();
		await producer.start();
		expect(await queueExists(r.queue("notifications", "order.created"))).toBe(false);

		const e = event();
		await producer.sendToChannel("order.created", e, { messageId: e.eventId, headers: { "x-trace": "t-1" } });

		// The producer declared both groups' queues: the event waits in each, persistent.
		for (const group of ["notifications", "products"]) {
			const msg = await peek(r.queue(group, "order.created"));
			expect(msg.properties.deliveryMode).toBe(2);
			expect(msg.properties.messageId).toBe(e.eventId);
			expect(msg.properties.headers).toMatchObject({ "x-trace": "t-1" });
			expect(JSON.parse(msg.content.toString())).toEqual(e);
		}

		const rec = new Recorder();
		const consumerNode = r.node();
		consumerNode.createService(consumerService("notifier", "notifications", ["order.created"], rec));
		await consumerNode.start();
		await waitFor("the event to reach the notifications consumer", () => rec.ids().has(e.eventId));
		expect(rec.all).toHaveLength(1);
		expect(rec.all[0].payload).toEqual(e);
		// products never started: its copy is still waiting for it.
		expect(await messageCount(r.queue("products", "order.created"))).toBe(1);
	});

	it("confirms 5,000 events published concurrently and delivers each exactly once", async () => {
		const r = newRig({ "user.registered": ["notifications"] });
		const rec = new Recorder();
		const consumerNode = r.node({ maxInFlight: 200 });
		consumerNode.createService(consumerService("notifier", "notifications", ["user.registered"], rec));
		const producer = r.node();
		await Promise.all([consumerNode.start(), producer.start()]);

		const events = Array.from({ length: 5000 }, () => event());
		const results = await Promise.allSettled(events.map(e => producer.sendToChannel("user.registered", e, { messageId: e.eventId })));
		const rejected = results.filter(x => x.status === "rejected") as PromiseRejectedResult[];
		expect(rejected.map(x => String(x.reason))).toEqual([]);

		await waitFor("all 5,000 events to be delivered", () => rec.ids().size === 5000, 60_000);
		// Every delivery acknowledged: once the consumer is gone, nothing is left to be redelivered.
		await consumerNode.stop();
		expect(await messageCount(r.queue("notifications", "user.registered"))).toBe(0);
		expect(rec.all).toHaveLength(5000);
		expect(rec.duplicates()).toBe(0);
		expect([...rec.ids()].sort()).toEqual(events.map(e => e.eventId).sort());
	}, 120_000);

	it("rejects a publish that no queue takes (an event without consumer group is returned) and keeps publishing afterwards", async () => {
		const r = newRig({ "order.created": ["notifications"] });
		const producer = r.node();
		await producer.start();

		await expect(producer.sendToChannel("nobody.listens", event())).rejects.toMatchObject({ type: "CHANNEL_UNROUTABLE" });

		const e = event();
		await producer.sendToChannel("order.created", e, { messageId: e.eventId });
		expect(await messageCount(r.queue("notifications", "order.created"))).toBe(1);
		expect((await peek(r.queue("notifications", "order.created"))).properties.messageId).toBe(e.eventId);
	});

	it("rejects a publish to an exchange deleted behind its back, then declares it again and publishes", async () => {
		const r = newRig({ "order.created": ["notifications"] });
		const producer = r.node();
		await producer.start();
		const first = event();
		await producer.sendToChannel("order.created", first, { messageId: first.eventId });

		// RabbitMQ closes a channel that publishes to a missing exchange (404).
		const ch = await inspect!.createChannel();
		await ch.deleteExchange(r.channel("order.created"));
		await ch.close();
		await expect(producer.sendToChannel("order.created", event())).rejects.toThrow(/not confirm|not published/);

		// The next publish opens a new channel, declares exchange and binding again, and is kept.
		const third = event();
		await producer.sendToChannel("order.created", third, { messageId: third.eventId });
		expect(await messageCount(r.queue("notifications", "order.created"))).toBe(2);
	});

	it("retries a failing handler with backoff: called 3 times, handled once, every retry copy persistent with its headers and meta", async () => {
		const r = newRig({ "order.created": ["notifications"] });
		const rec = new Recorder();
		const consumerNode = r.node({ maxRetries: 5, retryDelayMs: 50 });
		consumerNode.createService(
			consumerService("notifier", "notifications", ["order.created"], rec, d => {
				if (rec.of(d.eventId).length <= 2) throw new Error("not yet");
			}),
		);
		const producer = r.node();
		await Promise.all([consumerNode.start(), producer.start()]);

		const e = event();
		await producer.sendToChannel("order.created", e, {
			messageId: e.eventId,
			headers: { "x-trace": "t-5" },
			ctx: callerContext(producer, { tenant: "t-1" }, "req-42"),
		});
		await waitFor("the third attempt", () => rec.of(e.eventId).length === 3);
		await consumerNode.stop();

		const attempts = rec.of(e.eventId);
		expect(attempts).toHaveLength(3);
		attempts.forEach((d, i) => {
			expect(d.raw.properties.deliveryMode).toBe(2);
			expect(d.raw.properties.messageId).toBe(e.eventId);
			expect(d.raw.properties.headers).toMatchObject({ "x-trace": "t-5", $requestID: "req-42" });
			expect(d.raw.properties.headers["x-redelivered-count"]).toBe(i === 0 ? undefined : i);
			expect(d.meta).toEqual({ tenant: "t-1" });
			expect(d.requestID).toBe("req-42");
			expect(d.payload).toEqual(e);
		});
		// Handled once: nothing left in the main or the retry queue, nothing dead.
		expect(await messageCount(r.queue("notifications", "order.created"))).toBe(0);
		expect(await messageCount(r.retry("notifications"))).toBe(0);
		expect(await messageCount(r.dlq("notifications"))).toBe(0);
	});

	it("parks a poison event in the group's DLQ after N attempts with all its headers while other events flow, and a replay delivers it once", async () => {
		const r = newRig({ "order.created": ["notifications"] });
		const rec = new Recorder();
		let fixed = false;
		// Retries 1 s then 2 s after the first attempt: a wide margin for the 20 others to pass the
		// poison on a loaded machine (the ordering below is what is asserted, not a duration).
		const consumerNode = r.node({ maxRetries: 3, retryDelayMs: 1000, maxInFlight: 5 });
		consumerNode.createService(
			consumerService("notifier", "notifications", ["order.created"], rec, d => {
				if (d.payload.poison && !fixed) throw new Error(`cannot handle ${d.eventId}`);
			}),
		);
		const producer = r.node();
		await Promise.all([consumerNode.start(), producer.start()]);

		const poison = event({ poison: true });
		const others = Array.from({ length: 20 }, () => event());
		await producer.sendToChannel("order.created", poison, {
			messageId: poison.eventId,
			headers: { "x-trace": "t-6" },
			ctx: callerContext(producer, { tenant: "t-9" }, "req-6"),
		});
		await Promise.all(others.map(e => producer.sendToChannel("order.created", e, { messageId: e.eventId })));

		await waitFor("the others delivered and the poison parked", async () => others.every(e => rec.of(e.eventId).length === 1) && (await messageCount(r.dlq("notifications"))) === 1);
		const tries = rec.of(poison.eventId);
		expect(tries).toHaveLength(3);
		// The others did not wait behind the poison: all were handled before its last attempt.
		expect(Math.max(...others.map(e => rec.of(e.eventId)[0].seq))).toBeLessThan(tries[2].seq);

		const dead = await peek(r.dlq("notifications"));
		expect(dead.properties.deliveryMode).toBe(2);
		expect(dead.properties.messageId).toBe(poison.eventId);
		expect(JSON.parse(dead.content.toString())).toEqual(poison);
		const h = dead.properties.headers!;
		expect(h).toMatchObject({
			"x-trace": "t-6",
			$requestID: "req-6",
			"x-original-channel": r.channel("order.created"),
			"x-original-group": "notifications",
			"x-error-message": `cannot handle ${poison.eventId}`,
			"x-attempts": 3,
		});
		expect(JSON.parse(Buffer.from(String(h.$meta), "base64").toString())).toEqual({ tenant: "t-9" });
		expect(Number.isNaN(Date.parse(String(h["x-death-time"])))).toBe(false);

		// Listing (the $channels action, on RabbitMQ) does not consume.
		const listed = (await consumerNode.call("$channels.dlqList", { group: "notifications" })) as DeadLetter[];
		expect(listed.map(d => [d.messageId, d.event, d.attempts, d.error])).toEqual([[poison.eventId, "order.created", 3, `cannot handle ${poison.eventId}`]]);
		// The listing's channel is closed when it answers, but a quorum queue takes the unacknowledged
		// message back through its log: on a busy machine it is counted again a moment later.
		await waitFor("the listed dead letter ready again in the DLQ", async () => (await messageCount(r.dlq("notifications"))) === 1, 5000);

		// The function behind `npm run dlq -- replay`.
		fixed = true;
		const res = await replayAmqpDeadLetters(inspect!, { prefix: r.ns, groups: ["notifications"], messageId: poison.eventId });
		expect(res).toEqual({ replayed: [{ messageId: poison.eventId, group: "notifications", event: "order.created" }], failed: [] });
		await waitFor("the replayed event", () => rec.of(poison.eventId).length === 4);
		await consumerNode.stop();
		expect(rec.of(poison.eventId)).toHaveLength(4);
		const replayed = rec.of(poison.eventId)[3];
		expect(replayed.raw.properties.headers).toMatchObject({ "x-trace": "t-6", $requestID: "req-6", "x-replay-count": 1 });
		expect(replayed.raw.properties.headers).not.toHaveProperty("x-attempts");
		expect(replayed.raw.properties.headers).not.toHaveProperty("x-redelivered-count");
		expect(replayed.meta).toEqual({ tenant: "t-9" });
		expect(await messageCount(r.dlq("notifications"))).toBe(0);
		expect(await messageCount(r.queue("notifications", "order.created"))).toBe(0);
	});

	it("lists and replays dead letters from the command line and from the $channels action", async () => {
		const r = newRig({ "order.created": ["notifications"] });
		const rec = new Recorder();
		let fixed = false;
		const consumerNode = r.node({ maxRetries: 2, retryDelayMs: 50 });
		consumerNode.createService(
			consumerService("notifier", "notifications", ["order.created"], rec, () => {
				if (!fixed) throw new Error("down");
			}),
		);
		await consumerNode.start();
		const [a, b] = [event(), event()];
		for (const e of [a, b]) await consumerNode.sendToChannel("order.created", e, { messageId: e.eventId });
		await waitFor("both parked", async () => (await messageCount(r.dlq("notifications"))) === 2);

		const list = await runCli(r.ns, ["list", "--group", "notifications"]);
		expect(list.code).toBe(0);
		expect(list.out).toContain(a.eventId);
		expect(list.out).toContain(b.eventId);
		expect(list.out).toContain("2 dead letter(s)");

		fixed = true;
		const replay = await runCli(r.ns, ["replay", a.eventId, "--group", "notifications"]);
		expect(replay.out).toContain(`replayed ${a.eventId} (notifications, order.created)`);
		expect(replay.code).toBe(0);
		await waitFor("a replayed", () => rec.of(a.eventId).length === 3);
		expect(await messageCount(r.dlq("notifications"))).toBe(1);

		const res = (await consumerNode.call("$channels.dlqReplay", { all: true, group: "notifications" })) as ReplayResult;
		expect(res.replayed.map(x => x.messageId)).toEqual([b.eventId]);
		await waitFor("b replayed", () => rec.of(b.eventId).length === 3);
		await consumerNode.stop();
		expect(rec.of(a.eventId)).toHaveLength(3);
		expect(rec.of(b.eventId)).toHaveLength(3);
		expect(await messageCount(r.dlq("notifications"))).toBe(0);
	});

	it("redelivers the unacknowledged messages of a consumer killed mid-batch to another consumer of its group", async () => {
		const r = newRig({ "order.created": ["notifications"] });
		const victim = spawn(process.execPath, ["-r", "ts-node/register/transpile-only", "test/fixtures/channels-consumer.ts"], {
			cwd: ROOT,
			env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", AMQP_URL: SERVERS.rabbitmq, NAMESPACE: r.ns, MAX_IN_FLIGHT: "10" },
			stdio: ["ignore", "pipe", "pipe"],
		});
		r.children.push(victim);
		let out = "";
		victim.stdout!.on("data", d => (out += d));
		victim.stderr!.on("data", d => (out += d));
		const exited = new Promise(resolve => victim.on("exit", resolve));
		await waitFor("the victim consumer to start", () => {
			if (victim.exitCode !== null) throw new Error(`the victim exited: ${out}`);
			return out.includes("ready");
		}, 30_000);

		const producer = r.node();
		await producer.start();
		const events = Array.from({ length: 30 }, () => event());
		await Promise.all(events.map(e => producer.sendToChannel("order.created", e, { messageId: e.eventId })));
		const held = () => [...out.matchAll(/^got (\S+)$/gm)].map(m => m[1]);
		await waitFor("the victim to hold a full batch", () => held().length === 10);
		const lost = held();

		victim.kill("SIGKILL");
		await exited;

		const rec = new Recorder();
		const survivor = r.node();
		survivor.createService(consumerService("notifier", "notifications", ["order.created"], rec));
		await survivor.start();
		await waitFor("all 30 events delivered to the survivor", () => rec.ids().size === 30);
		await survivor.stop();

		expect([...rec.ids()].sort()).toEqual(events.map(e => e.eventId).sort());
		expect(rec.duplicates()).toBe(0);
		for (const id of lost) expect(rec.of(id)[0].raw.fields.redelivered).toBe(true);
		expect(await messageCount(r.queue("notifications", "order.created"))).toBe(0);
	});

	it("declares the main, retry and dead-letter queues as quorum queues", async () => {
		const r = newRig({ "order.created": ["notifications"] });
		const consumerNode = r.node();
		consumerNode.createService(consumerService("notifier", "notifications", ["order.created"], new Recorder()));
		await consumerNode.start();

		const declare = async (queue: string, options: object) => {
			const ch = await inspect!.createChannel();
			ch.on("error", () => undefined);
			try {
				await ch.assertQueue(queue, options);
				await ch.close();
				return "ok";
			} catch (err) {
				return (err as Error).message;
			}
		};
		for (const [queue, asDeclared] of [
			[r.queue("notifications", "order.created"), mainQueueOptions("notifications", r.ns)],
			[r.retry("notifications"), RETRY_QUEUE],
			[r.dlq("notifications"), QUORUM_QUEUE],
		] as const) {
			// Same arguments: accepted. As a classic queue: refused, because it is a quorum queue.
			expect(await declare(queue, asDeclared)).toBe("ok");
			const classic = { durable: true, arguments: { ...asDeclared.arguments, "x-queue-type": "classic" } };
			expect(await declare(queue, classic)).toMatch(/PRECONDITION_FAILED.*x-queue-type.*'quorum'/);
		}
	});

	it("dead-letters a message delivered past the delivery limit without being settled, and replays it from the DLQ", async () => {
		const r = newRig({ "order.created": ["notifications"] });
		const producer = r.node();
		await producer.start();
		const poison = event();
		await producer.sendToChannel("order.created", poison, { messageId: poison.eventId });

		// A consumer that dies on the message every time, as a crash would: never settled, requeued.
		const ch = await inspect!.createChannel();
		ch.on("error", () => undefined);
		let deliveries = 0;
		await ch.consume(r.queue("notifications", "order.created"), msg => {
			if (!msg) return;
			deliveries++;
			ch.nack(msg, false, true);
		});
		await waitFor("the poison message in the DLQ", async () => (await messageCount(r.dlq("notifications"))) === 1, 20_000);
		await ch.close();
		expect(deliveries).toBe(DELIVERY_LIMIT + 1);
		expect(await messageCount(r.queue("notifications", "order.created"))).toBe(0);

		// The dead-letter tools read where it died from RabbitMQ's own headers, and replay it.
		const list = await runCli(r.ns, ["list", "--group", "notifications", "--json"]);
		expect(list.code).toBe(0);
		const [dead] = JSON.parse(list.out);
		expect(dead).toMatchObject({ messageId: poison.eventId, group: "notifications", event: "order.created", error: "dead-lettered by RabbitMQ: delivery_limit" });
		const rec = new Recorder();
		const consumerNode = r.node();
		consumerNode.createService(consumerService("notifier", "notifications", ["order.created"], rec));
		await consumerNode.start();
		expect((await runCli(r.ns, ["replay", poison.eventId, "--group", "notifications"])).code).toBe(0);
		await waitFor("the replayed event", () => rec.ids().has(poison.eventId));
		expect(rec.of(poison.eventId)).toHaveLength(1);
	});

	it("reconnects after losing its connection: a publish made during the outage waits, then publish and consume work again", async () => {
		const r = newRig({ "order.created": ["notifications"] });
		const target = new URL(SERVERS.rabbitmq);
		const proxy = await TcpProxy.start({ host: target.hostname, port: Number(target.port || 5672) });
		r.closers.push(() => proxy.close());
		const viaProxy = new URL(SERVERS.rabbitmq);
		viaProxy.port = String(proxy.port);
		const opts = { amqpUrl: viaProxy.toString(), reconnectDelayMs: 200, connectWaitMs: 20_000 };
		const rec = new Recorder();
		const consumerNode = r.node(opts);
		consumerNode.createService(consumerService("notifier", "notifications", ["order.created"], rec));
		const producer = r.node(opts);
		await Promise.all([consumerNode.start(), producer.start()]);
		const before = event();
		await producer.sendToChannel("order.created", before, { messageId: before.eventId });
		await waitFor("the first event", () => rec.ids().has(before.eventId));

		// RabbitMQ out of reach: both adapters lose their connection and fail to reconnect.
		proxy.cut();
		await waitFor("both adapters to notice", () => !adapterOf(consumerNode).connected && !adapterOf(producer).connected);
		const during = event();
		let settled = false;
		const publishing = producer.sendToChannel("order.created", during, { messageId: during.eventId }).finally(() => (settled = true));
		await sleep(300);
		expect(settled).toBe(false);

		proxy.restore();
		await publishing;
		await waitFor("the consumer to resubscribe and get the event", () => rec.ids().has(during.eventId));
		const after = event();
		await producer.sendToChannel("order.created", after, { messageId: after.eventId });
		await waitFor("the last event", () => rec.ids().has(after.eventId));
		// Published during and after the outage: delivered once each.
		expect(rec.of(during.eventId)).toHaveLength(1);
		expect(rec.of(after.eventId)).toHaveLength(1);
		// The event handled just before the cut may come again: its ack can be lost with the
		// connection, and RabbitMQ then redelivers it (at least once; consumers are idempotent by
		// eventId). Seen once in about ten CI runs here. It is never lost.
		expect(rec.of(before.eventId).length).toBeGreaterThanOrEqual(1);
		expect(rec.of(before.eventId).length).toBeLessThanOrEqual(2);
	});
});
