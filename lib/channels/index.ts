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
}
