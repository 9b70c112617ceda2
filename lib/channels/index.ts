/**
 * Durable business events through @moleculer/channels.
 *
 * CONTRACT (used by the outbox relay and the consumers; the implementation lives beside it):
 * - `buildChannelsMiddleware(opts)` returns the Channels middleware for moleculer.config.ts:
 *   with `amqpUrl` set, the confirming AMQP adapter (./amqp-adapter.ts) on RabbitMQ; without it,
 *   the in-process adapter (./local-adapter.ts) for the embedded default.
 * - Producers call `broker.sendToChannel(eventName, payload, { messageId: payload.eventId })`.
 *   It resolves only when the event is safe: confirmed by RabbitMQ into the queue of every
 *   consumer group of CONSUMER_GROUPS (lib/events.ts), or, in process, handled or dead-lettered
 *   by every group. It rejects otherwise (nack, return, unroutable, not connected), and the
 *   caller (the outbox relay) tries again later.
 * - Consumers declare `channels: { "order.created": consumer("notifications", handler) }`.
 *   A handler that throws is retried with backoff, then parked in the group's dead-letter queue
 *   with its headers; see `npm run dlq`.
 */
import { Middleware as ChannelsMiddleware } from "@moleculer/channels";
import type { Context, Middleware, Service, ServiceBroker } from "moleculer";
import type { BusinessEventName, BusinessEvents } from "../events";
import { ConfirmingAmqpAdapter } from "./amqp-adapter";
import { deadLetterService } from "./dlq-service";
import { LocalAdapter } from "./local-adapter";
import type { SendOptions } from "./types";
import { METRICS, setMetric } from "../metrics";

export { ConfirmingAmqpAdapter } from "./amqp-adapter";
export { LocalAdapter, type LocalMessage } from "./local-adapter";
export type { DeadLetter, DeadLetterOps, ReplayResult, SendOptions } from "./types";

export interface ChannelsOptions {
	/** RabbitMQ URL; unset: the in-process adapter. */
	amqpUrl?: string;
	/** Prefix of exchanges and queues (the broker namespace). */
	namespace: string;
	/** Attempts of a handler before its message is dead-lettered. */
	maxRetries: number;
	/** First retry delay; doubled on each attempt. */
	retryDelayMs: number;
	/** Where the in-process adapter keeps its dead-letter table (SQLite). */
	dataDir: string;

	// Optional tuning, with the defaults of CHANNEL_DEFAULTS.
	/** Cap of the doubled retry delay. */
	maxRetryDelayMs?: number;
	/** Messages a consumer handles at once (AMQP prefetch). */
	maxInFlight?: number;
	/** The consumer groups of each event; tests give their own. Default: CONSUMER_GROUPS. */
	consumerGroups?: Record<string, string[]>;
	/** In process: how long a publish waits for a declared group to subscribe before it rejects. */
	subscribeWaitMs?: number;
	/** In process: how often the dead-letter table is checked for replays `npm run dlq` requested. */
	replayPollMs?: number;
	/** AMQP: how long a publish waits for a (re)connection before it rejects. */
	connectWaitMs?: number;
	/** How long stopping a consumer waits for its running handlers. */
	unsubscribeTimeoutMs?: number;
	/** AMQP: how long a publish waits for RabbitMQ's confirm before it rejects. */
	confirmTimeoutMs?: number;
	/** AMQP: delay between reconnection attempts. */
	reconnectDelayMs?: number;
	/** Register the `$channels` service (dlqList, dlqReplay). Default true. */
	dlqService?: boolean;
	/** How often the dead-letter depth of this node's consumer groups is measured (carsi.dlq.depth); 0: never. Default 15 s. */
	dlqMetricsMs?: number;
}

/** Values moleculer.config.ts can start from. */
export const CHANNEL_DEFAULTS = {
	maxRetries: 5,
	retryDelayMs: 1_000,
	maxRetryDelayMs: 60_000,
	maxInFlight: 20,
	subscribeWaitMs: 10_000,
	connectWaitMs: 5_000,
} as const;

export type ChannelAdapter = ConfirmingAmqpAdapter | LocalAdapter;

export function createChannelAdapter(opts: ChannelsOptions): ChannelAdapter {
	const common = {
		prefix: opts.namespace,
		maxRetries: opts.maxRetries,
		retryDelayMs: opts.retryDelayMs,
		maxRetryDelayMs: opts.maxRetryDelayMs ?? CHANNEL_DEFAULTS.maxRetryDelayMs,
		consumerGroups: opts.consumerGroups,
		unsubscribeTimeoutMs: opts.unsubscribeTimeoutMs,
	};
	if (opts.amqpUrl)
		return new ConfirmingAmqpAdapter({
			...common,
			url: opts.amqpUrl,
			maxInFlight: opts.maxInFlight ?? CHANNEL_DEFAULTS.maxInFlight,
			connectWaitMs: opts.connectWaitMs ?? CHANNEL_DEFAULTS.connectWaitMs,
			confirmTimeoutMs: opts.confirmTimeoutMs,
			reconnectDelayMs: opts.reconnectDelayMs,
		});
	return new LocalAdapter({
		...common,
		dataDir: opts.dataDir,
		subscribeWaitMs: opts.subscribeWaitMs ?? CHANNEL_DEFAULTS.subscribeWaitMs,
		replayPollMs: opts.replayPollMs,
	});
}

/**
 * The Channels middleware on the adapter `opts` selects, with `context: true` (handlers get a
 * Context whose meta and requestID came with the message), and the `$channels` service.
 */
export function buildChannelsMiddleware(opts: ChannelsOptions): Middleware {
	const adapter = createChannelAdapter(opts);
	const mw = ChannelsMiddleware({
		adapter: adapter as never,
		schemaProperty: "channels",
		sendMethodName: "sendToChannel",
		adapterPropertyName: "channelAdapter",
		channelHandlerTrigger: "emitLocalChannelHandler",
		context: true,
	});
	let dlqTimer: NodeJS.Timeout | undefined;
	return {
		...mw,
		created(broker: ServiceBroker) {
			mw.created(broker);
			if (opts.dlqService !== false) broker.createService(deadLetterService(adapter));
		},
		async started(broker: ServiceBroker) {
			await (mw as { started?: (b: ServiceBroker) => unknown }).started?.(broker);
			const every = opts.dlqMetricsMs ?? 15_000;
			if (every > 0) {
				dlqTimer = setInterval(() => void reportDeadLetterDepth(broker, adapter), every);
				dlqTimer.unref();
				void reportDeadLetterDepth(broker, adapter);
			}
		},
		async stopped(broker: ServiceBroker) {
			if (dlqTimer) clearInterval(dlqTimer);
			await (mw as { stopped?: (b: ServiceBroker) => unknown }).stopped?.(broker);
		},
	} as unknown as Middleware;
}

/** carsi.dlq.depth of every consumer group a service of this node consumes for. */
async function reportDeadLetterDepth(broker: ServiceBroker, adapter: ChannelAdapter): Promise<void> {
	const groups = new Set<string>();
	for (const svc of broker.services)
		for (const chan of Object.values((svc.schema as { channels?: Record<string, { group?: string }> }).channels ?? {}))
			if (chan?.group) groups.add(chan.group);
	for (const group of groups) {
		try {
			setMetric(broker, METRICS.dlqDepth, await adapter.deadLetterDepth(group), { group });
		} catch (err) {
			broker.getLogger("Channels").debug(`Dead-letter depth of ${group} not measured: ${(err as Error).message}`);
		}
	}
}

/**
 * A channel handler: `ctx.params` is the payload, `raw` the AMQP message (or LocalMessage in
 * process); `this` is the service (type it: `function (this: ProductsThis, ctx) { … }`).
 */
export type ChannelHandler<P = unknown, T = Service> = (this: T, ctx: Context<P, Record<string, unknown>>, raw: unknown) => unknown;

export interface ConsumerOptions {
	/** Attempts before dead-lettering (default: ChannelsOptions.maxRetries). */
	maxRetries?: number;
	/** Messages handled at once (default: ChannelsOptions.maxInFlight). */
	maxInFlight?: number;
}

/**
 * A channel definition for a service's `channels`: one consumer group, handled with a Context,
 * retried and then dead-lettered. `channels: { "order.created": consumer("notifications", h) }`.
 */
export function consumer<P = unknown, T = Service>(group: string, handler: ChannelHandler<P, T>, opts: ConsumerOptions = {}) {
	return {
		group,
		context: true,
		deadLettering: { enabled: true },
		...(opts.maxRetries != null ? { maxRetries: opts.maxRetries } : {}),
		...(opts.maxInFlight != null ? { maxInFlight: opts.maxInFlight } : {}),
		handler,
	};
}

/** `broker.sendToChannel` typed by the event: the payload must match lib/events.ts, messageId is its eventId. */
export function sendToChannel<E extends BusinessEventName>(
	broker: ServiceBroker,
	event: E,
	payload: BusinessEvents[E],
	opts: SendOptions = {},
): Promise<void> {
	if (typeof broker.sendToChannel !== "function")
		return Promise.reject(new Error("The broker has no channels middleware (buildChannelsMiddleware in moleculer.config.ts)"));
	return broker.sendToChannel(event, payload, { messageId: payload.eventId, ...opts });
}

declare module "moleculer" {
	interface ServiceBroker {
		/** Added by the channels middleware (lib/channels): resolves once the event is safe, see CONTRACT. */
		sendToChannel(channelName: string, payload: unknown, opts?: SendOptions): Promise<void>;
		/** The channel adapter of the channels middleware. */
		channelAdapter?: ChannelAdapter;
	}
}
