/**
 * Dead-letter operations on RabbitMQ, for the CLI (`npm run dlq`) and the `$channels` actions.
 *
 * Listing never consumes: it reads the DLQ with a consumer whose prefetch covers the messages it
 * wants, then cancels it and closes its channel without acknowledging anything, so RabbitMQ puts
 * every message back. A replay republishes a dead letter into its original group's main queue
 * (persistent, mandatory, confirmed, headers kept minus the counters of the failed run) and only
 * then acknowledges the dead copy; what it does not replay goes back to the DLQ the same way.
 */
import { randomUUID } from "node:crypto";
import type { Channel, ChannelModel, ConfirmChannel, ConsumeMessage } from "amqplib";
import { DEAD_LETTER_HEADERS, H, dlqName, errorText, eventOfChannel, mainQueueName, withoutHeaders } from "./names";
import type { DeadLetter, ReplayResult } from "./types";

export interface AmqpDlqTarget {
	prefix: string;
	groups: string[];
}

/** Messages ready in a queue, or null when it does not exist (checked on a throwaway channel: a miss closes it). */
async function readyCount(conn: ChannelModel, queue: string): Promise<number | null> {
	const ch = await conn.createChannel();
	ch.on("error", () => undefined);
	try {
		const { messageCount } = await ch.checkQueue(queue);
		await ch.close().catch(() => undefined);
		return messageCount;
	} catch {
		return null;
	}
}

/** Messages waiting in a group's dead-letter queue (0 when it does not exist yet). */
export async function amqpDeadLetterDepth(conn: ChannelModel, prefix: string, group: string): Promise<number> {
	return (await readyCount(conn, dlqName(group, prefix))) ?? 0;
}

/**
 * Up to `max` messages of `queue`, delivered (unacknowledged) to a consumer on `ch`; stops when
 * `max` arrived or nothing came for `idleMs`. The caller acknowledges or closes the channel.
 */
async function take(ch: Channel, queue: string, max: number, idleMs = 500): Promise<ConsumeMessage[]> {
	const got: ConsumeMessage[] = [];
	await ch.prefetch(max);
	let finish: () => void = () => undefined;
	const done = new Promise<void>(resolve => (finish = resolve));
	let idle = setTimeout(finish, idleMs);
	const { consumerTag } = await ch.consume(
		queue,
		msg => {
			if (!msg) return finish();
			got.push(msg);
			clearTimeout(idle);
			if (got.length >= max) finish();
			else idle = setTimeout(finish, idleMs);
		},
		{ noAck: false },
	);
	await done;
	clearTimeout(idle);
	await ch.cancel(consumerTag).catch(() => undefined);
	return got;
}

function decodePayload(content: Buffer): unknown {
	try {
		return JSON.parse(content.toString("utf8"));
	} catch {
		return { base64: content.toString("base64") };
	}
}

function plainHeaders(headers: Record<string, unknown> | undefined): Record<string, unknown> {
	// amqplib decodes AMQP timestamps as { "!": "timestamp", value }: fine to republish, noisy to show.
	return JSON.parse(JSON.stringify(headers ?? {}, (_k, v) => (v && typeof v === "object" && v["!"] === "timestamp" ? new Date(v.value * 1000).toISOString() : v)));
}

export function toDeadLetter(group: string, prefix: string, msg: ConsumeMessage): DeadLetter {
	const headers = (msg.properties.headers ?? {}) as Record<string, unknown>;
	// A message RabbitMQ dead-lettered itself (the main queue's delivery limit) carries none of our
	// headers, only its own: the queue it died in is `${group}.${channel}`, and why.
	const deathQueue = String(headers["x-first-death-queue"] ?? "");
	const deathReason = headers["x-first-death-reason"];
	const channel = String(headers[H.originalChannel] ?? (deathQueue.startsWith(`${group}.`) ? deathQueue.slice(group.length + 1) : ""));
	return {
		messageId: msg.properties.messageId ?? null,
		group: String(headers[H.originalGroup] ?? group),
		event: eventOfChannel(prefix, channel),
		channel,
		attempts: headers[H.attempts] == null ? null : Number(headers[H.attempts]),
		error: headers[H.errorMessage] != null ? String(headers[H.errorMessage]) : deathReason != null ? `dead-lettered by RabbitMQ: ${String(deathReason)}` : null,
		deadAt: headers[H.deathTime] == null ? null : String(headers[H.deathTime]),
		headers: plainHeaders(headers),
		payload: decodePayload(msg.content),
	};
}

/** The dead letters of the groups' DLQs, oldest first, without consuming them. */
export async function listAmqpDeadLetters(conn: ChannelModel, opts: AmqpDlqTarget & { limit?: number }): Promise<DeadLetter[]> {
	const limit = opts.limit ?? 1000;
	const out: DeadLetter[] = [];
	for (const group of opts.groups) {
		if (out.length >= limit) break;
		const queue = dlqName(group, opts.prefix);
		const count = await readyCount(conn, queue);
		if (!count) continue;
		const ch = await conn.createChannel();
		ch.on("error", () => undefined);
		try {
			const msgs = await take(ch, queue, Math.min(count, limit - out.length));
			out.push(...msgs.map(m => toDeadLetter(group, opts.prefix, m)));
		} finally {
			// Closing without acks gives every message back to the DLQ.
			await ch.close().catch(() => undefined);
		}
	}
	return out;
}

function confirmSend(ch: ConfirmChannel, returned: Set<string>, queue: string, msg: ConsumeMessage, headers: Record<string, unknown>): Promise<void> {
	const messageId = msg.properties.messageId || randomUUID();
	const p = msg.properties;
	return new Promise<void>((resolve, reject) => {
		try {
			ch.publish(
				"",
				queue,
				msg.content,
				{
					messageId,
					persistent: true,
					mandatory: true,
					headers,
					...(p.correlationId ? { correlationId: p.correlationId } : {}),
					...(p.contentType ? { contentType: p.contentType } : {}),
					...(p.timestamp ? { timestamp: p.timestamp } : {}),
				},
				err => {
					const key = `${queue}\u0000${messageId}`;
					if (err) reject(err);
					else if (returned.delete(key)) reject(new Error(`queue '${queue}' does not exist (message returned)`));
					else resolve();
				},
			);
		} catch (err) {
			reject(err);
		}
	});
}

/**
 * Replays the dead letters of the groups' DLQs that match: one `messageId`, or `all`. Each goes back
 * to the main queue of its x-original-group/x-original-channel only (not to the other groups).
 */
export async function replayAmqpDeadLetters(
	conn: ChannelModel,
	opts: AmqpDlqTarget & { messageId?: string; all?: boolean },
): Promise<ReplayResult> {
	if (!opts.all && !opts.messageId) throw new Error("replay needs a messageId or all");
	const result: ReplayResult = { replayed: [], failed: [] };
	for (const group of opts.groups) {
		const queue = dlqName(group, opts.prefix);
		// Rounds of at most 1000: a replay of --all larger than that continues while it makes progress.
		for (;;) {
			const count = await readyCount(conn, queue);
			if (!count) break;
			const ch = await conn.createConfirmChannel();
			ch.on("error", () => undefined);
			const returned = new Set<string>();
			ch.on("return", (m: ConsumeMessage) => returned.add(`${m.fields.routingKey}\u0000${m.properties.messageId}`));
			let progressed = 0;
			try {
				const msgs = await take(ch, queue, Math.min(count, 1000));
				for (const msg of msgs) {
					if (!opts.all && msg.properties.messageId !== opts.messageId) continue;
					const dead = toDeadLetter(group, opts.prefix, msg);
					const entry = { messageId: dead.messageId, group: dead.group, event: dead.event };
					if (!dead.channel) {
						result.failed.push({ ...entry, error: `no ${H.originalChannel} header: cannot tell its queue` });
						continue;
					}
					const headers = withoutHeaders(msg.properties.headers, DEAD_LETTER_HEADERS);
					headers[H.replayedAt] = new Date().toISOString();
					headers[H.replayCount] = (Number(msg.properties.headers?.[H.replayCount]) || 0) + 1;
					try {
						await confirmSend(ch, returned, mainQueueName(dead.group, dead.channel), msg, headers);
						ch.ack(msg);
						result.replayed.push(entry);
						progressed++;
					} catch (err) {
						result.failed.push({ ...entry, error: errorText(err) });
					}
				}
			} finally {
				await ch.close().catch(() => undefined);
			}
			if (!opts.all || progressed === 0 || count <= 1000) break;
		}
	}
	return result;
}
