/**
 * The AMQP adapter of @moleculer/channels 0.1.8 with its five ways of losing an event closed
 * (issue 4 §3). It keeps the stock adapter's names (exchange `${prefix}.${event}`, queue
 * `${group}.${prefix}.${event}`), its headers and its middleware contract, and replaces how it
 * connects, publishes and consumes:
 *
 * a. every message it writes is persistent: the publish, the retry copies, the dead-letter copies;
 * b. before its first publish of a channel the producer declares the exchange and the quorum queue,
 *    binding and DLQ of every consumer group of CONSUMER_GROUPS (lib/events.ts), so an event published
 *    before a consumer ever started waits in its queue. Declarations run on a channel of their
 *    own, publishes on a confirm channel of their own; either is reopened when it closes, and the
 *    connection is re-established (and every consumer resubscribed) when it drops;
 * c. a publish goes out `mandatory` with a `messageId` on a confirm channel and resolves only on
 *    RabbitMQ's ack; a nack, a `basic.return` (no queue took it) or a closed channel rejects it.
 *    A full write buffer is back-pressure, not an error: the next publishes wait for 'drain';
 * d. a failed message is acknowledged only after a persistent copy with all its headers and an
 *    incremented x-redelivered-count is confirmed into the group's retry queue, whose per-message
 *    TTL dead-letters it back into the main queue (other messages flow meanwhile). After
 *    `maxRetries` attempts the copy goes, confirmed, to the group's dead-letter queue with every
 *    header plus x-original-channel, x-original-group, x-error-message, x-attempts, x-death-time;
 * e. main, retry and dead-letter queues are quorum queues from their first declaration; a main
 *    queue dead-letters a message delivered DELIVERY_LIMIT times without being settled (a consumer
 *    that dies on it) into the group's DLQ (lib/channels/names.ts mainQueueOptions).
 *
 * A message is acknowledged after its handler succeeded (or after its retry or dead-letter copy is
 * confirmed); a consumer that dies holds only unacknowledged messages, which RabbitMQ redelivers.
 */
import { randomUUID } from "node:crypto";
import amqp, { type Channel, type ChannelModel, type ConfirmChannel, type ConsumeMessage, type Message, type Options } from "amqplib";
import { Adapters } from "@moleculer/channels";
import { Errors, type LoggerInstance, type ServiceBroker } from "moleculer";
import { CONSUMER_GROUPS } from "../events";
import { amqpDeadLetterDepth, listAmqpDeadLetters, replayAmqpDeadLetters } from "./amqp-dlq";
import {
	BROKER_BOOKKEEPING_HEADERS,
	H,
	QUORUM_QUEUE,
	RETRY_QUEUE,
	backoff,
	dlqName,
	errorText,
	eventOfChannel,
	knownGroups,
	mainQueueName,
	mainQueueOptions,
	retryName,
	withoutHeaders,
} from "./names";
import type { AdapterChannel, ChannelDef, DeadLetter, DeadLetterOps, DeadLetterQuery, ReplayQuery, ReplayResult, SendOptions } from "./types";

const C = require("@moleculer/channels/src/constants") as Record<string, string>;

export interface ConfirmingAmqpOptions {
	/** One URL, or several separated by ";" (tried in turn). */
	url: string | string[];
	/** Prefix of exchanges and queues: the broker namespace. */
	prefix: string;
	/** Attempts of a handler before its message is dead-lettered. */
	maxRetries: number;
	/** Delay before the first retry; doubled on each attempt. */
	retryDelayMs: number;
	/** Cap of the retry delay. */
	maxRetryDelayMs?: number;
	/** Unacknowledged messages a consumer holds at once (prefetch): also how many run concurrently. */
	maxInFlight?: number;
	/** The consumer groups of each event (default: CONSUMER_GROUPS of lib/events.ts). */
	consumerGroups?: Record<string, string[]>;
	/** How long a publish waits for a connection being (re)established before it rejects. */
	connectWaitMs?: number;
	/** How long stopping a consumer waits for its handlers; what is left unacked is redelivered. */
	unsubscribeTimeoutMs?: number;
	/** Delay between reconnection attempts. */
	reconnectDelayMs?: number;
	/**
	 * How long a publish waits for RabbitMQ's confirm before it rejects (a stalled connection is only
	 * noticed by heartbeats, after up to two minutes). The message may still be confirmed later: the
	 * caller's retry then publishes it twice, which consumers absorb (idempotent by eventId).
	 */
	confirmTimeoutMs?: number;
	socketOptions?: Record<string, unknown>;
}

type Defaults = Required<Omit<ConfirmingAmqpOptions, "url" | "socketOptions">>;

/** A confirm channel with its back-pressure state and the returns not yet matched to a confirm. */
interface PublishChannel {
	ch: ConfirmChannel;
	closed: boolean;
	blocked: boolean;
	drainWaiters: Array<() => void>;
	/** `basic.return`s by exchange/routing key/messageId; a return always precedes its message's ack. */
	returned: Map<string, number>;
}

interface ConsumerEntry {
	chan: ChannelDef;
	channel: Channel | null;
	consumerTag: string | null;
	starting: Promise<void> | null;
	restartTimer?: NodeJS.Timeout;
}

/** Properties of a message carried into its retry and dead-letter copies (never userId/replyTo/expiration). */
function copiedProperties(msg: Message): Options.Publish {
	const p = msg.properties;
	const out: Options.Publish = { messageId: p.messageId || randomUUID() };
	if (p.correlationId) out.correlationId = p.correlationId;
	if (p.contentType) out.contentType = p.contentType;
	if (p.contentEncoding) out.contentEncoding = p.contentEncoding;
	if (p.timestamp) out.timestamp = p.timestamp;
	if (p.type) out.type = p.type;
	if (p.appId) out.appId = p.appId;
	if (p.priority !== undefined) out.priority = p.priority;
	return out;
}

function returnKey(exchange: string, routingKey: string, messageId: string): string {
	return `${exchange}\u0000${routingKey}\u0000${messageId}`;
}

function sleep(ms: number): Promise<void> {
	return new Promise(resolve => setTimeout(resolve, ms));
}

export class UnroutableError extends Errors.MoleculerError {
	constructor(exchange: string, routingKey: string, messageId: string) {
		super(
			`RabbitMQ returned message ${messageId} published to '${exchange || "(default)"}'${routingKey ? ` with key '${routingKey}'` : ""}: no queue is bound to take it`,
			500,
			"CHANNEL_UNROUTABLE",
			{ exchange, routingKey, messageId },
		);
	}
}

const AmqpBase = Adapters.AMQP;
const BaseInit = Adapters.Base.prototype.init;

export class ConfirmingAmqpAdapter extends AmqpBase implements DeadLetterOps {
	declare connection: ChannelModel | null;
	declare channel: ConfirmChannel | null;
	declare broker: ServiceBroker;
	declare logger: LoggerInstance;

	readonly settings: Defaults;
	/** Every exchange and queue this adapter declared (tests delete them; operators can read them). */
	readonly declaredNames = { exchanges: new Set<string>(), queues: new Set<string>() };

	private pub: PublishChannel | null = null;
	private pubOpening: Promise<PublishChannel> | null = null;
	private admin: Channel | null = null;
	private adminOpening: Promise<Channel> | null = null;
	private readonly producerDeclared = new Map<string, Promise<void>>();
	private readonly consumers = new Map<string, ConsumerEntry>();
	private readonly connectWaiters = new Set<() => void>();
	private connecting: Promise<void> | null = null;
	private reconnectTimer: NodeJS.Timeout | null = null;
	private abortConnecting: (() => void) | null = null;
	/** True once disconnect() ran: a publish then rejects at once instead of waiting for a connection. */
	private closedByUs = false;
	private inflight = 0;

	constructor(opts: ConfirmingAmqpOptions) {
		super({
			prefix: opts.prefix,
			maxRetries: opts.maxRetries,
			maxInFlight: opts.maxInFlight ?? 20,
			deadLettering: { enabled: true },
			amqp: { url: opts.url, socketOptions: { noDelay: true, ...(opts.socketOptions ?? {}) } },
		});
		this.settings = {
			prefix: opts.prefix,
			maxRetries: Math.max(1, opts.maxRetries),
			retryDelayMs: opts.retryDelayMs,
			maxRetryDelayMs: opts.maxRetryDelayMs ?? 60_000,
			maxInFlight: opts.maxInFlight ?? 20,
			consumerGroups: opts.consumerGroups ?? CONSUMER_GROUPS,
			connectWaitMs: opts.connectWaitMs ?? 5_000,
			unsubscribeTimeoutMs: opts.unsubscribeTimeoutMs ?? 30_000,
			reconnectDelayMs: opts.reconnectDelayMs ?? 2_000,
			confirmTimeoutMs: opts.confirmTimeoutMs ?? 30_000,
		};
	}

	/** The stock init without its amqplib version warning (it knows 0.8/0.9; 0.10 is what runs here). */
	override init(broker: ServiceBroker, logger: LoggerInstance): void {
		BaseInit.call(this, broker, logger);
	}

	/** The consumer groups that must receive a channel's events. */
	groupsOf(channel: string): string[] {
		return this.settings.consumerGroups[eventOfChannel(this.settings.prefix, channel)] ?? [];
	}

	// ---- connection ---------------------------------------------------------------------------

	/** Connects, retrying until RabbitMQ answers (as the stock adapter does). */
	override connect(): Promise<void> {
		this.closedByUs = false;
		this.stopping = false;
		if (this.connected) return Promise.resolve();
		this.connecting ??= new Promise<void>(resolve => {
			// disconnect() during the attempts ends them: the broker is stopping before it ever connected.
			this.abortConnecting = () => {
				this.connecting = null;
				resolve();
			};
			const attempt = () => {
				this.tryConnect()
					.then(() => {
						this.connecting = null;
						resolve();
					})
					.catch(err => {
						if (this.closedByUs) {
							this.connecting = null;
							resolve();
							return;
						}
						this.logger.error(`Unable to connect to RabbitMQ; retrying in ${this.settings.reconnectDelayMs} ms.`, errorText(err));
						this.reconnectTimer = setTimeout(attempt, this.settings.reconnectDelayMs);
					});
			};
			attempt();
		});
		return this.connecting;
	}

	override async tryConnect(): Promise<void> {
		const urls = this.opts.amqp.url as string[];
		this.connectAttempt = (this.connectAttempt || 0) + 1;
		const url = urls[(this.connectAttempt - 1) % urls.length];
		const conn = await amqp.connect(url, this.opts.amqp.socketOptions);
		if (this.closedByUs) {
			// disconnect() ran while this attempt was under way.
			await conn.close().catch(() => undefined);
			return;
		}
		try {
			conn.on("error", err => this.logger.error("RabbitMQ connection error.", errorText(err)));
			conn.on("close", err => this.onConnectionClosed(conn, err));
			conn.on("blocked", reason => this.logger.warn("RabbitMQ blocked the connection (resource alarm): publishes wait.", reason));
			conn.on("unblocked", () => this.logger.info("RabbitMQ unblocked the connection."));
			this.connection = conn;
			await this.publishChannel();
			this.connected = true;
			this.connectionCount++;
			this.logger.info("Channels connected to RabbitMQ.");
			this.wakeConnectWaiters();
			if (this.connectionCount > 1) await this.resubscribeAllChannels();
		} catch (err) {
			if (this.connection === conn) this.connection = null;
			this.connected = false;
			await conn.close().catch(() => undefined);
			throw err;
		}
	}

	private onConnectionClosed(conn: ChannelModel, err: unknown): void {
		if (this.connection !== conn) return;
		this.connection = null;
		this.connected = false;
		this.pub = null;
		this.channel = null;
		this.admin = null;
		this.producerDeclared.clear();
		for (const entry of this.consumers.values()) {
			entry.channel = null;
			entry.consumerTag = null;
		}
		if (this.stopping || this.closedByUs) return;
		this.logger.error(`RabbitMQ connection lost; reconnecting in ${this.settings.reconnectDelayMs} ms.`, err ? errorText(err) : "");
		this.reconnectTimer = setTimeout(() => void this.connect(), this.settings.reconnectDelayMs);
	}

	private wakeConnectWaiters(): void {
		for (const wake of [...this.connectWaiters]) wake();
	}

	/** Waits a bounded time for a connection being (re)established; rejects when there is none. */
	private async waitConnected(): Promise<ChannelModel> {
		const deadline = Date.now() + this.settings.connectWaitMs;
		while (!this.connected || !this.connection) {
			const left = deadline - Date.now();
			if (this.stopping || this.closedByUs || left <= 0)
				throw new Errors.MoleculerRetryableError("The channel adapter is not connected to RabbitMQ: not published", 503, "CHANNELS_NOT_CONNECTED");
			await new Promise<void>(resolve => {
				const done = () => {
					clearTimeout(timer);
					this.connectWaiters.delete(done);
					resolve();
				};
				const timer = setTimeout(done, left);
				this.connectWaiters.add(done);
			});
		}
		return this.connection;
	}

	override async disconnect(): Promise<void> {
		if (this.stopping) return;
		this.stopping = true;
		this.closedByUs = true;
		if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
		this.abortConnecting?.();
		this.wakeConnectWaiters();
		try {
			await Promise.all([...this.consumers.values()].map(entry => this.unsubscribe(entry.chan as unknown as AdapterChannel)));
			// Publishes already written wait for their confirms (bounded): closing now would reject them.
			const deadline = Date.now() + this.settings.unsubscribeTimeoutMs;
			while (this.inflight > 0 && Date.now() < deadline) await sleep(20);
			const conn = this.connection;
			this.connection = null;
			this.connected = false;
			this.pub = null;
			this.channel = null;
			this.admin = null;
			if (conn) await conn.close().catch(err => this.logger.warn("Error while closing the RabbitMQ connection.", errorText(err)));
		} finally {
			this.producerDeclared.clear();
			this.stopping = false;
		}
	}

	// ---- channels of the connection -----------------------------------------------------------

	/** The confirm channel of publishes, reopened when it closed (a closed channel never comes back). */
	private async publishChannel(): Promise<PublishChannel> {
		if (this.pub && !this.pub.closed) return this.pub;
		const conn = this.connection;
		if (!conn) throw new Errors.MoleculerRetryableError("The channel adapter is not connected to RabbitMQ", 503, "CHANNELS_NOT_CONNECTED");
		this.pubOpening ??= (async () => {
			const ch = await conn.createConfirmChannel();
			const pc: PublishChannel = { ch, closed: false, blocked: false, drainWaiters: [], returned: new Map() };
			const release = () => {
				const waiters = pc.drainWaiters.splice(0);
				for (const wake of waiters) wake();
			};
			ch.on("return", (msg: Message) => {
				const key = returnKey(msg.fields.exchange, msg.fields.routingKey, String(msg.properties.messageId));
				pc.returned.set(key, (pc.returned.get(key) ?? 0) + 1);
			});
			ch.on("drain", () => {
				pc.blocked = false;
				release();
			});
			ch.on("error", err => this.logger.error("RabbitMQ closed the publish channel.", errorText(err)));
			ch.on("close", () => {
				pc.closed = true;
				release();
				if (this.pub === pc) {
					this.pub = null;
					this.channel = null;
				}
				// Most likely a publish hit an exchange deleted behind our back: declare again.
				this.producerDeclared.clear();
			});
			this.pub = pc;
			this.channel = ch;
			return pc;
		})().finally(() => {
			this.pubOpening = null;
		});
		return this.pubOpening;
	}

	/** The channel of declarations: a refused declaration (404, 406) closes it, never the publish channel. */
	private async adminChannel(): Promise<Channel> {
		if (this.admin) return this.admin;
		const conn = this.connection;
		if (!conn) throw new Errors.MoleculerRetryableError("The channel adapter is not connected to RabbitMQ", 503, "CHANNELS_NOT_CONNECTED");
		this.adminOpening ??= (async () => {
			const ch = await conn.createChannel();
			ch.on("error", err => this.logger.error("RabbitMQ refused a declaration.", errorText(err)));
			ch.on("close", () => {
				if (this.admin === ch) this.admin = null;
			});
			this.admin = ch;
			return ch;
		})().finally(() => {
			this.adminOpening = null;
		});
		return this.adminOpening;
	}

	private async declareExchange(ch: Channel, name: string): Promise<void> {
		this.declaredNames.exchanges.add(name);
		await ch.assertExchange(name, "fanout", { durable: true });
	}

	private async declareQueue(ch: Channel, name: string, options: Options.AssertQueue): Promise<void> {
		this.declaredNames.queues.add(name);
		await ch.assertQueue(name, options);
	}

	/**
	 * The exchange of a channel and the main queue + binding of each of its consumer groups, once per
	 * channel and connection: what makes a publish before any consumer started wait in a queue.
	 */
	private declareForProducer(channel: string): Promise<void> {
		let declared = this.producerDeclared.get(channel);
		if (!declared) {
			declared = (async () => {
				const ch = await this.adminChannel();
				await this.declareExchange(ch, channel);
				for (const group of this.groupsOf(channel)) {
					const queue = mainQueueName(group, channel);
					await this.declareQueue(ch, queue, mainQueueOptions(group, this.settings.prefix));
					await ch.bindQueue(queue, channel, "");
					// Where the main queue dead-letters past its delivery limit, before any consumer ran.
					await this.declareQueue(ch, dlqName(group, this.settings.prefix), QUORUM_QUEUE);
				}
			})();
			const mine = declared;
			mine.catch(() => {
				if (this.producerDeclared.get(channel) === mine) this.producerDeclared.delete(channel);
			});
			this.producerDeclared.set(channel, declared);
		}
		return declared;
	}

	/** Everything a consumer of `chan` needs: exchange, main queue + binding, the group's retry exchange/queue and DLQ. */
	private async declareForConsumer(chan: ChannelDef): Promise<void> {
		const ch = await this.adminChannel();
		const prefix = this.settings.prefix;
		const main = mainQueueName(chan.group, chan.name);
		const retry = retryName(chan.group, prefix);
		await this.declareExchange(ch, chan.name);
		await this.declareQueue(ch, main, mainQueueOptions(chan.group, prefix));
		await ch.bindQueue(main, chan.name, "");
		await this.declareExchange(ch, retry);
		await this.declareQueue(ch, retry, RETRY_QUEUE);
		await ch.bindQueue(retry, retry, "");
		await this.declareQueue(ch, dlqName(chan.group, prefix), QUORUM_QUEUE);
	}

	// ---- publishing ---------------------------------------------------------------------------

	/**
	 * Publishes one message, persistent and mandatory, and resolves on RabbitMQ's ack. Rejects on a
	 * nack, on a return (routed to no queue) and when the channel closes before the confirm.
	 */
	async confirmPublish(exchange: string, routingKey: string, content: Buffer, options: Options.Publish): Promise<void> {
		const pc = await this.publishChannel();
		// Back-pressure: amqplib buffered the last message (publish() returned false); wait for 'drain'.
		while (pc.blocked && !pc.closed) await new Promise<void>(resolve => pc.drainWaiters.push(resolve));
		const messageId = String(options.messageId ?? randomUUID());
		const key = returnKey(exchange, routingKey, messageId);
		this.inflight++;
		try {
			await new Promise<void>((resolve, reject) => {
				const timer = setTimeout(
					() =>
						reject(
							new Errors.MoleculerRetryableError(
								`RabbitMQ did not confirm message ${messageId} within ${this.settings.confirmTimeoutMs} ms`,
								504,
								"CHANNEL_CONFIRM_TIMEOUT",
							),
						),
					this.settings.confirmTimeoutMs,
				);
				try {
					const written = pc.ch.publish(exchange, routingKey, content, { ...options, messageId, persistent: true, mandatory: true }, err => {
						clearTimeout(timer);
						const returned = takeReturned(pc, key);
						if (err) reject(new Errors.MoleculerRetryableError(`RabbitMQ did not confirm message ${messageId}: ${errorText(err)}`, 503, "CHANNEL_NOT_CONFIRMED"));
						else if (returned) reject(new UnroutableError(exchange, routingKey, messageId));
						else resolve();
					});
					if (!written) pc.blocked = true;
				} catch (err) {
					// The channel closed under us: nothing was written.
					clearTimeout(timer);
					reject(new Errors.MoleculerRetryableError(`Message ${messageId} not published: ${errorText(err)}`, 503, "CHANNEL_CLOSED"));
				}
			});
		} finally {
			this.inflight--;
		}
	}

	override async publish(channelName: string, payload: unknown, opts: SendOptions = {}): Promise<void> {
		if (this.stopping) throw new Errors.MoleculerRetryableError("The channel adapter is stopping: not published", 503, "CHANNELS_STOPPING");
		await this.waitConnected();
		await this.declareForProducer(channelName);
		const content = opts.raw ? (payload as Buffer) : (this.serializer.serialize(payload as object, "") as Buffer);
		const options: Options.Publish = {
			messageId: opts.messageId ?? randomUUID(),
			timestamp: Math.floor(Date.now() / 1000),
			headers: opts.headers ?? {},
		};
		if (opts.correlationId) options.correlationId = opts.correlationId;
		await this.confirmPublish(channelName, "", content, options);
	}

	// ---- consuming ----------------------------------------------------------------------------

	override async subscribe(pkgChan: AdapterChannel): Promise<void> {
		const chan = pkgChan as unknown as ChannelDef;
		chan.unsubscribing = false;
		if (chan.maxRetries == null) chan.maxRetries = this.settings.maxRetries;
		if (chan.maxInFlight == null) chan.maxInFlight = this.settings.maxInFlight;
		// Dead-lettering is always on: a business event is parked, never dropped.
		chan.deadLettering = { enabled: true, queueName: dlqName(chan.group, this.settings.prefix) };
		if (!this.groupsOf(chan.name).includes(chan.group))
			this.logger.warn(
				`Group '${chan.group}' consumes '${chan.name}' but is not in CONSUMER_GROUPS (lib/events.ts): producers do not declare its queue, so events published before it first started are not kept for it.`,
			);
		const entry: ConsumerEntry = this.consumers.get(chan.id) ?? { chan, channel: null, consumerTag: null, starting: null };
		entry.chan = chan;
		this.consumers.set(chan.id, entry);
		this.initChannelActiveMessages(chan.id, false);
		await this.startConsuming(entry);
	}

	private startConsuming(entry: ConsumerEntry): Promise<void> {
		entry.starting ??= (async () => {
			const conn = await this.waitConnected();
			const chan = entry.chan;
			await this.declareForConsumer(chan);
			const ch = await conn.createChannel();
			ch.on("error", err => this.logger.error(`RabbitMQ closed the consumer channel of '${chan.name}' (${chan.group}).`, errorText(err)));
			ch.on("close", () => this.onConsumerChannelClosed(entry, ch));
			await ch.prefetch(chan.maxInFlight ?? this.settings.maxInFlight);
			entry.channel = ch;
			const queue = mainQueueName(chan.group, chan.name);
			const { consumerTag } = await ch.consume(
				queue,
				msg =>
					void this.onMessage(entry, ch, msg).catch(err =>
						this.logger.error(`Message of '${chan.name}' (${chan.group}) left unacknowledged; RabbitMQ redelivers it.`, errorText(err)),
					),
				{ noAck: false },
			);
			entry.consumerTag = consumerTag;
			this.logger.debug(`Consuming '${queue}' (prefetch ${chan.maxInFlight}).`);
		})().finally(() => {
			entry.starting = null;
		});
		return entry.starting;
	}

	/** A consumer channel closed alone (the connection lives): consume again after a pause. */
	private onConsumerChannelClosed(entry: ConsumerEntry, ch: Channel): void {
		if (entry.channel !== ch) return;
		entry.channel = null;
		entry.consumerTag = null;
		if (this.stopping || this.closedByUs || entry.chan.unsubscribing) return;
		this.scheduleRestart(entry);
	}

	private scheduleRestart(entry: ConsumerEntry): void {
		if (entry.restartTimer) return;
		entry.restartTimer = setTimeout(() => {
			entry.restartTimer = undefined;
			// A lost connection is handled by the reconnection, which resubscribes everything.
			if (!this.connection || entry.channel || entry.chan.unsubscribing || this.consumers.get(entry.chan.id) !== entry) return;
			this.startConsuming(entry).catch(err => {
				this.logger.error(`Could not consume '${entry.chan.name}' (${entry.chan.group}) again; retrying.`, errorText(err));
				this.scheduleRestart(entry);
			});
		}, this.settings.reconnectDelayMs);
	}

	override async resubscribeAllChannels(): Promise<void> {
		for (const entry of this.consumers.values()) {
			if (entry.channel || entry.chan.unsubscribing) continue;
			await this.startConsuming(entry).catch(err => {
				this.logger.error(`Could not resubscribe '${entry.chan.name}' (${entry.chan.group}); retrying.`, errorText(err));
				this.scheduleRestart(entry);
			});
		}
	}

	private async onMessage(entry: ConsumerEntry, ch: Channel, msg: ConsumeMessage | null): Promise<void> {
		const chan = entry.chan;
		if (msg === null) {
			// RabbitMQ cancelled the consumer (its queue was deleted): declare and consume again.
			if (!chan.unsubscribing && !this.stopping) {
				this.logger.warn(`RabbitMQ cancelled the consumer of '${chan.name}' (${chan.group}); consuming again.`);
				await ch.close().catch(() => undefined);
			}
			return;
		}
		if (chan.unsubscribing) {
			// Arrived while the consumer is being cancelled: give it back now rather than on close.
			safely(() => ch.nack(msg, false, true));
			return;
		}
		const id = `${msg.fields.consumerTag}:${msg.fields.deliveryTag}`;
		const tracked = this.activeMessages.has(chan.id);
		if (tracked) this.addChannelActiveMessages(chan.id, [id]);
		try {
			let content: unknown;
			try {
				content = this.serializer.deserialize(msg.content, "");
			} catch (err) {
				// Unreadable: no retry can help.
				await this.deadLetter(chan, ch, msg, err, Number(msg.properties.headers?.[H.redeliveredCount] ?? 0) + 1);
				return;
			}
			try {
				await chan.handler(content, msg);
			} catch (err) {
				this.metricsIncrement(C.METRIC_CHANNELS_MESSAGES_ERRORS_TOTAL, chan as never);
				await this.onHandlerFailed(chan, ch, msg, err);
				return;
			}
			this.ack(ch, msg);
		} finally {
			if (this.activeMessages.has(chan.id)) this.removeChannelActiveMessages(chan.id, [id]);
		}
	}

	private async onHandlerFailed(chan: ChannelDef, ch: Channel, msg: ConsumeMessage, err: unknown): Promise<void> {
		const headers = (msg.properties.headers ?? {}) as Record<string, unknown>;
		const attempts = (Number(headers[H.redeliveredCount]) || 0) + 1;
		const maxAttempts = Math.max(1, chan.maxRetries ?? this.settings.maxRetries);
		if (attempts >= maxAttempts) {
			await this.deadLetter(chan, ch, msg, err, attempts);
			return;
		}
		const delay = backoff(attempts, this.settings.retryDelayMs, this.settings.maxRetryDelayMs);
		this.logger.warn(
			`Handler of '${chan.name}' (${chan.group}) failed on message ${msg.properties.messageId} (attempt ${attempts}/${maxAttempts}); retrying in ${delay} ms.`,
			errorText(err),
		);
		try {
			// To the group's retry exchange under the main queue's name as routing key: when the TTL
			// expires, RabbitMQ dead-letters the copy to the default exchange, i.e. into that queue.
			await this.confirmPublish(retryName(chan.group, this.settings.prefix), mainQueueName(chan.group, chan.name), msg.content, {
				...copiedProperties(msg),
				expiration: String(delay),
				headers: { ...withoutHeaders(headers, BROKER_BOOKKEEPING_HEADERS), [H.redeliveredCount]: attempts },
			});
			this.metricsIncrement(C.METRIC_CHANNELS_MESSAGES_RETRIES_TOTAL, chan as never);
			this.ack(ch, msg);
		} catch (pubErr) {
			await this.requeueLater(ch, msg, pubErr);
		}
	}

	/** Parks a message in its group's DLQ with every header it had, then acknowledges the original. */
	private async deadLetter(chan: ChannelDef, ch: Channel, msg: ConsumeMessage, err: unknown, attempts: number): Promise<void> {
		const queue = dlqName(chan.group, this.settings.prefix);
		const error = err instanceof Error ? err : new Error(String(err));
		try {
			await this.confirmPublish("", queue, msg.content, {
				...copiedProperties(msg),
				headers: {
					...(msg.properties.headers ?? {}),
					[H.originalChannel]: chan.name,
					[H.originalGroup]: chan.group,
					[H.errorMessage]: errorText(error),
					[H.errorName]: error.name,
					[H.attempts]: attempts,
					[H.deathTime]: new Date().toISOString(),
				},
			});
			this.metricsIncrement(C.METRIC_CHANNELS_MESSAGES_DEAD_LETTERING_TOTAL, chan as never);
			this.logger.error(`Message ${msg.properties.messageId} of '${chan.name}' failed ${attempts} time(s) in '${chan.group}'; parked in '${queue}'.`, error.message);
			this.ack(ch, msg);
		} catch (pubErr) {
			await this.requeueLater(ch, msg, pubErr);
		}
	}

	/** The copy could not be confirmed: keep the original (unacked → requeued), after a pause. */
	private async requeueLater(ch: Channel, msg: ConsumeMessage, err: unknown): Promise<void> {
		this.logger.error(`Could not park message ${msg.properties.messageId} for a retry; RabbitMQ keeps it.`, errorText(err));
		await sleep(this.settings.retryDelayMs);
		safely(() => ch.nack(msg, false, true));
	}

	private ack(ch: Channel, msg: ConsumeMessage): void {
		// On a closed channel the ack is impossible and RabbitMQ redelivers: at least once.
		safely(() => ch.ack(msg));
	}

	override async unsubscribe(pkgChan: AdapterChannel): Promise<void> {
		const chan = pkgChan as unknown as ChannelDef;
		if (chan.unsubscribing) return;
		chan.unsubscribing = true;
		const entry = this.consumers.get(chan.id);
		if (!entry) return;
		this.consumers.delete(chan.id);
		if (entry.restartTimer) clearTimeout(entry.restartTimer);
		await entry.starting?.catch(() => undefined);
		const ch = entry.channel;
		if (ch && entry.consumerTag) await ch.cancel(entry.consumerTag).catch(() => undefined);
		const deadline = Date.now() + this.settings.unsubscribeTimeoutMs;
		while (this.getNumberOfChannelActiveMessages(chan.id) > 0 && Date.now() < deadline) await sleep(20);
		if (this.getNumberOfChannelActiveMessages(chan.id) > 0)
			this.logger.warn(`Stopping '${chan.name}' (${chan.group}) with handlers still running: RabbitMQ redelivers their messages.`);
		this.activeMessages.delete(chan.id);
		entry.channel = null;
		if (ch) await ch.close().catch(() => undefined);
	}

	// ---- dead letters -------------------------------------------------------------------------

	private dlqGroups(group?: string): string[] {
		return group ? [group] : knownGroups(this.settings.consumerGroups);
	}

	async deadLetterDepth(group: string): Promise<number> {
		return amqpDeadLetterDepth(await this.waitConnected(), this.settings.prefix, group);
	}

	async listDeadLetters(query: DeadLetterQuery = {}): Promise<DeadLetter[]> {
		const conn = await this.waitConnected();
		return listAmqpDeadLetters(conn, { prefix: this.settings.prefix, groups: this.dlqGroups(query.group), limit: query.limit });
	}

	async replayDeadLetters(query: ReplayQuery): Promise<ReplayResult> {
		const conn = await this.waitConnected();
		return replayAmqpDeadLetters(conn, { prefix: this.settings.prefix, groups: this.dlqGroups(query.group), messageId: query.messageId, all: query.all });
	}
}

function takeReturned(pc: PublishChannel, key: string): boolean {
	const n = pc.returned.get(key);
	if (!n) return false;
	if (n === 1) pc.returned.delete(key);
	else pc.returned.set(key, n - 1);
	return true;
}

function safely(fn: () => void): void {
	try {
		fn();
	} catch {
		/* the channel is closed: RabbitMQ redelivers what was not acknowledged */
	}
}
