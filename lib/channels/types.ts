/** Types shared by the two adapters, the dead-letter tools and the middleware. */
import type { Service } from "moleculer";
import type { Channel as PackageChannel } from "@moleculer/channels/types/src";

/** The channel type of the package's own declarations (what the adapter methods are declared with). */
export type AdapterChannel = PackageChannel;

/** Options of `broker.sendToChannel(name, payload, opts)` the adapters honour. */
export interface SendOptions {
	/** The event's id (the outbox passes `payload.eventId`); a random UUID when missing. */
	messageId?: string;
	/** Extra message headers; `$requestID`, `$meta`… are what the middleware puts there from `ctx`. */
	headers?: Record<string, unknown>;
	correlationId?: string;
	/** The calling context: its requestID and meta travel with the message. */
	ctx?: unknown;
	[key: string]: unknown;
}

/**
 * A channel as @moleculer/channels hands it to an adapter (its `Channel` typedef), with the fields
 * these adapters read. `name` carries the prefix (`carsi.order.created`).
 */
export interface ChannelDef {
	id: string;
	name: string;
	group: string;
	context?: boolean;
	unsubscribing?: boolean;
	/** Attempts of the handler before the message is dead-lettered. */
	maxRetries?: number | null;
	/** Messages handled at once by this consumer (AMQP prefetch). */
	maxInFlight?: number | null;
	deadLettering?: { enabled?: boolean; queueName?: string } | null;
	handler: (payload: unknown, raw: unknown) => Promise<unknown>;
}

/** A parked message, as `npm run dlq -- list` and `$channels.dlqList` show it. */
export interface DeadLetter {
	messageId: string | null;
	group: string;
	/** The event (without the prefix). */
	event: string;
	/** The channel with its prefix, as in x-original-channel. */
	channel: string;
	attempts: number | null;
	error: string | null;
	deadAt: string | null;
	headers: Record<string, unknown>;
	payload: unknown;
	/** The local adapter's row id. */
	id?: number;
}

export interface DeadLetterQuery {
	group?: string;
	limit?: number;
}

export interface ReplayQuery {
	/** One message (every dead copy with that id, in the chosen groups). */
	messageId?: string;
	/** Every dead letter of the chosen groups. */
	all?: boolean;
	group?: string;
}

export interface ReplayResult {
	replayed: Array<{ messageId: string | null; group: string; event: string }>;
	failed: Array<{ messageId: string | null; group: string; event: string; error: string }>;
}

/** What both adapters offer the `$channels` service and the CLI. */
export interface DeadLetterOps {
	listDeadLetters(query?: DeadLetterQuery): Promise<DeadLetter[]>;
	/** Messages parked in the group's dead-letter queue (or table). */
	deadLetterDepth(group: string): Promise<number>;
	replayDeadLetters(query: ReplayQuery): Promise<ReplayResult>;
}

export type ChannelService = Service;
