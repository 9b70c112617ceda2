/**
 * Names of what the durable channels declare, and the headers they write. One place, because the
 * producer, the consumer, the dead-letter tools and the tests must agree on every one of them: a
 * producer that declared `notifications.carsi.order.created` with other arguments than the
 * consumer would make RabbitMQ refuse the second declaration (406).
 */
import { CONSUMER_GROUPS } from "../events";

/** Exchange of an event (fanout): `${prefix}.${event}`, what @moleculer/channels calls the channel name. */
export function channelName(prefix: string, event: string): string {
	return prefix ? `${prefix}.${event}` : event;
}

/** The event of a channel name (the prefix taken off), or the name itself without the prefix. */
export function eventOfChannel(prefix: string, channel: string): string {
	return prefix && channel.startsWith(`${prefix}.`) ? channel.slice(prefix.length + 1) : channel;
}

/** A consumer group's queue of one event: `${group}.${prefix}.${event}`, as the stock adapter's subscribe() names it. */
export function mainQueueName(group: string, channel: string): string {
	return `${group}.${channel}`;
}

/**
 * A group's retry exchange and queue (same name, different kinds of object). A retry copy waits
 * there for its per-message TTL, then RabbitMQ dead-letters it to the default exchange under its
 * routing key, which is the main queue it came from: one retry queue per group serves every event.
 */
export function retryName(group: string, prefix: string): string {
	return prefix ? `${group}.${prefix}.RETRY` : `${group}.RETRY`;
}

/** A group's dead-letter queue, shared by every event of the group (x-original-channel tells them apart). */
export function dlqName(group: string, prefix: string): string {
	return prefix ? `${group}.${prefix}.DLQ` : `${group}.DLQ`;
}

/** Every consumer group named in lib/events.ts (the dead-letter tools look at these without --group). */
export function knownGroups(groups: Record<string, string[]> = CONSUMER_GROUPS): string[] {
	return [...new Set(Object.values(groups).flat())].sort();
}

/**
 * Queue arguments of the dead-letter queues, and the base of the main queues': quorum from the
 * start, because RabbitMQ refuses to redeclare an existing classic queue as quorum (406
 * PRECONDITION_FAILED). Quorum queues are replicated and fsync before confirming, and their
 * publisher confirms mean "stored on a majority". On a single node they work the same, with one
 * replica.
 */
export const QUORUM_QUEUE = { durable: true, arguments: { "x-queue-type": "quorum" } } as const;

/**
 * Deliveries of one message by a main queue before RabbitMQ itself dead-letters it. The adapter's
 * retries never count here (each retry is a new message through the retry queue): only deliveries
 * that were never settled do, i.e. a consumer that dies or loses its connection on the message,
 * a poison message that would otherwise be redelivered forever.
 */
export const DELIVERY_LIMIT = 20;

/**
 * A main queue: quorum, with `x-delivery-limit` and the group's DLQ as dead-letter target (through
 * the default exchange), dead-lettered at least once (confirmed into the DLQ before it is dropped;
 * that strategy needs `x-overflow: reject-publish`). RabbitMQ refuses a redeclaration with other
 * arguments (406), so producer, consumer and tools all take them from here.
 */
export function mainQueueOptions(group: string, prefix: string) {
	return {
		durable: true,
		arguments: {
			"x-queue-type": "quorum",
			"x-delivery-limit": DELIVERY_LIMIT,
			"x-dead-letter-exchange": "",
			"x-dead-letter-routing-key": dlqName(group, prefix),
			"x-dead-letter-strategy": "at-least-once",
			"x-overflow": "reject-publish",
		},
	} as const;
}

/**
 * The retry queue: quorum too, with at-least-once dead-lettering (RabbitMQ 3.10+), so a copy whose
 * TTL expired is confirmed into the main queue before the retry queue forgets it. That strategy
 * needs `x-overflow: reject-publish`. Per-message TTL on quorum queues is also 3.10+.
 */
export const RETRY_QUEUE = {
	durable: true,
	arguments: {
		"x-queue-type": "quorum",
		"x-dead-letter-exchange": "",
		"x-dead-letter-strategy": "at-least-once",
		"x-overflow": "reject-publish",
	},
} as const;

/** Headers of the dead-letter copies, beside every header the message had. */
export const H = {
	/** Attempts made so far (the stock adapter's header, kept for compatibility). */
	redeliveredCount: "x-redelivered-count",
	originalChannel: "x-original-channel",
	originalGroup: "x-original-group",
	errorMessage: "x-error-message",
	errorName: "x-error-name",
	attempts: "x-attempts",
	deathTime: "x-death-time",
	replayedAt: "x-replayed-at",
	replayCount: "x-replay-count",
} as const;

/**
 * Headers RabbitMQ writes when it dead-letters or redelivers a message. A retry copy drops them:
 * they describe the copy's trip through the retry queue, not the event, and RabbitMQ 3.13+ ignores
 * an x-death a client publishes anyway.
 */
export const BROKER_BOOKKEEPING_HEADERS = [
	"x-death",
	"x-first-death-exchange",
	"x-first-death-queue",
	"x-first-death-reason",
	"x-last-death-exchange",
	"x-last-death-queue",
	"x-last-death-reason",
	"x-delivery-count",
];

/** What a replay takes off a dead letter: the counters of its failed run and where it died. */
export const DEAD_LETTER_HEADERS = [
	...BROKER_BOOKKEEPING_HEADERS,
	H.redeliveredCount,
	H.originalChannel,
	H.originalGroup,
	H.errorMessage,
	H.errorName,
	H.attempts,
	H.deathTime,
];

/** The delay before retry number `attempt` (1-based): `first * 2^(attempt-1)`, capped. */
export function backoff(attempt: number, firstMs: number, maxMs: number): number {
	return Math.min(maxMs, Math.round(firstMs * 2 ** Math.max(0, attempt - 1)));
}

export function withoutHeaders(headers: Record<string, unknown> | undefined, names: readonly string[]): Record<string, unknown> {
	const out: Record<string, unknown> = { ...(headers ?? {}) };
	for (const name of names) delete out[name];
	return out;
}

/** An error message fit for a header: one bounded string. */
export function errorText(err: unknown, max = 1000): string {
	const msg = err instanceof Error ? err.message : String(err);
	return msg.length > max ? `${msg.slice(0, max - 1)}…` : msg;
}
