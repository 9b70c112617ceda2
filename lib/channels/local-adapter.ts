/**
 * The in-process channel adapter of the embedded default (no RabbitMQ), on @moleculer/channels'
 * BaseAdapter. The package's Fake adapter emits a Moleculer event and forgets it: no retry, no
 * dead letter, and a send before start is lost. Here a publish *is* the delivery:
 *
 * - `publish` hands the event to one subscribed consumer of every group CONSUMER_GROUPS names for
 *   it, and resolves only when each group has handled it (retrying with backoff up to `maxRetries`
 *   attempts) or has parked it in the dead-letter table `${dataDir}/channels.sqlite`;
 * - a group not subscribed in this process (yet: services subscribe after they started) is waited
 *   for a bounded time; then the publish rejects, so the caller (the outbox relay, whose row stays
 *   pending) tries again later. The same holds before `connect()` and while stopping: a publish is
 *   never dropped, it either reaches every group or fails.
 *
 * With the outbox in front, that is at least once across a restart: the row is marked sent only
 * after every group handled the event. A group that handled it before a sibling group failed
 * receives it again on the relay's next round (consumers are idempotent by eventId).
 */
import { randomUUID } from "node:crypto";
import { Adapters } from "@moleculer/channels";
import { Errors, type LoggerInstance, type ServiceBroker } from "moleculer";
import { CONSUMER_GROUPS } from "../events";
import { DeadLetterStore, rowToDeadLetter, type DeadLetterRow } from "./dead-letter-store";
import { DEAD_LETTER_HEADERS, H, backoff, errorText, eventOfChannel, knownGroups, withoutHeaders } from "./names";
import type { AdapterChannel, ChannelDef, DeadLetter, DeadLetterOps, DeadLetterQuery, ReplayQuery, ReplayResult, SendOptions } from "./types";

const C = require("@moleculer/channels/src/constants") as Record<string, string>;

export interface LocalAdapterOptions {
	/** Prefix of channel names (the broker namespace), as the AMQP adapter. */
	prefix: string;
	/** Attempts of a handler before its message is dead-lettered. */
	maxRetries: number;
	/** Delay before the first retry; doubled on each attempt. */
	retryDelayMs: number;
	maxRetryDelayMs?: number;
	/** Directory of channels.sqlite (the dead-letter table). */
	dataDir: string;
	/** The consumer groups of each event (default: CONSUMER_GROUPS of lib/events.ts). */
	consumerGroups?: Record<string, string[]>;
	/** How long a publish waits for the adapter to start and a declared group to subscribe. */
	subscribeWaitMs?: number;
	/** How often the table is checked for replays requested by `npm run dlq -- replay` (0: never). */
	replayPollMs?: number;
	/** How long stopping a consumer waits for its running handlers. */
	unsubscribeTimeoutMs?: number;
}

/** What a handler receives as `raw` (the second argument), the in-process twin of an AMQP message. */
export interface LocalMessage {
	messageId: string;
	channel: string;
	group: string;
	headers: Record<string, unknown>;
	/** 1 on the first delivery. */
	attempt: number;
	redelivered: boolean;
}

interface Envelope {
	channel: string;
	event: string;
	group: string;
	content: Buffer;
	headers: Record<string, unknown>;
	messageId: string;
}

type Outcome = { ok: true; attempts: number } | { ok: false; attempts: number; error: Error };

function sleep(ms: number): Promise<void> {
	return new Promise(resolve => setTimeout(resolve, ms));
}

function asError(err: unknown): Error {
	return err instanceof Error ? err : new Error(String(err));
}

const Base = Adapters.Base;

export class LocalAdapter extends Base implements DeadLetterOps {
	declare broker: ServiceBroker;
	declare logger: LoggerInstance;

	readonly settings: Required<LocalAdapterOptions>;
	readonly store: DeadLetterStore;
	/** Subscribed consumers by channel and group. */
	private readonly subscribers = new Map<string, ChannelDef[]>();
	private readonly turn = new Map<string, number>();
	private readonly wakers = new Set<() => void>();
	private readonly replaying = new Set<number>();
	private stopping = false;
	private stopped = false;
	private poller: NodeJS.Timeout | null = null;
	private polling: Promise<void> | null = null;

	constructor(opts: LocalAdapterOptions) {
		super({ prefix: opts.prefix, maxRetries: opts.maxRetries, deadLettering: { enabled: true } });
		this.settings = {
			prefix: opts.prefix,
			maxRetries: Math.max(1, opts.maxRetries),
			retryDelayMs: opts.retryDelayMs,
			maxRetryDelayMs: opts.maxRetryDelayMs ?? 60_000,
			dataDir: opts.dataDir,
			consumerGroups: opts.consumerGroups ?? CONSUMER_GROUPS,
			subscribeWaitMs: opts.subscribeWaitMs ?? 10_000,
			replayPollMs: opts.replayPollMs ?? 2_000,
			unsubscribeTimeoutMs: opts.unsubscribeTimeoutMs ?? 30_000,
		};
		this.store = DeadLetterStore.inDir(opts.dataDir);
	}

	override init(broker: ServiceBroker, logger: LoggerInstance): void {
		super.init(broker, logger);
	}

	groupsOf(event: string): string[] {
		return this.settings.consumerGroups[event] ?? [];
	}

	override async connect(): Promise<void> {
		this.stopping = false;
		this.stopped = false;
		await this.store.open();
		this.connected = true;
		this.wake();
		if (this.settings.replayPollMs > 0) {
			this.poller = setInterval(() => {
				this.polling ??= this.replayRequested()
					.catch(err => this.logger.error("Replaying requested dead letters failed.", errorText(err)))
					.finally(() => (this.polling = null));
			}, this.settings.replayPollMs);
			this.poller.unref();
		}
	}

	override async disconnect(): Promise<void> {
		this.stopping = true;
		this.wake();
		if (this.poller) clearInterval(this.poller);
		this.poller = null;
		await this.polling;
		const deadline = Date.now() + this.settings.unsubscribeTimeoutMs;
		while (this.getNumberOfTrackedChannels() > 0 && [...this.activeMessages.values()].some(a => a.length > 0) && Date.now() < deadline) await sleep(20);
		this.connected = false;
		this.stopped = true;
		this.stopping = false;
		await this.store.close();
	}

	override async subscribe(pkgChan: AdapterChannel): Promise<void> {
		const chan = pkgChan as unknown as ChannelDef;
		chan.unsubscribing = false;
		if (chan.maxRetries == null) chan.maxRetries = this.settings.maxRetries;
		chan.deadLettering = { enabled: true, queueName: "dead_letters" };
		const event = eventOfChannel(this.settings.prefix, chan.name);
		if (!this.groupsOf(event).includes(chan.group))
			this.logger.warn(`Group '${chan.group}' consumes '${event}' but is not in CONSUMER_GROUPS (lib/events.ts): publishes do not reach it.`);
		const key = this.key(chan.name, chan.group);
		const list = this.subscribers.get(key) ?? [];
		list.push(chan);
		this.subscribers.set(key, list);
		this.initChannelActiveMessages(chan.id, false);
		this.wake();
	}

	override async unsubscribe(pkgChan: AdapterChannel): Promise<void> {
		const chan = pkgChan as unknown as ChannelDef;
		if (chan.unsubscribing) return;
		chan.unsubscribing = true;
		const key = this.key(chan.name, chan.group);
		const rest = (this.subscribers.get(key) ?? []).filter(c => c !== chan);
		if (rest.length) this.subscribers.set(key, rest);
		else this.subscribers.delete(key);
		const deadline = Date.now() + this.settings.unsubscribeTimeoutMs;
		while (this.getNumberOfChannelActiveMessages(chan.id) > 0 && Date.now() < deadline) await sleep(20);
		this.activeMessages.delete(chan.id);
	}

	override async publish(channelName: string, payload: unknown, opts: SendOptions = {}): Promise<void> {
		if (this.stopping || this.stopped)
			throw new Errors.MoleculerRetryableError("The channel adapter is stopping: not delivered", 503, "CHANNELS_STOPPING");
		const event = eventOfChannel(this.settings.prefix, channelName);
		const groups = this.groupsOf(event);
		if (groups.length === 0)
			throw new Errors.MoleculerError(
				`No consumer group is declared for '${event}' (CONSUMER_GROUPS in lib/events.ts): the event would reach nobody`,
				500,
				"CHANNEL_UNROUTABLE",
				{ event },
			);
		const content = opts.raw ? (payload as Buffer) : (this.serializer.serialize(payload as object, "") as Buffer);
		const messageId = opts.messageId ?? randomUUID();
		const headers = { ...(opts.headers ?? {}) };
		const results = await Promise.allSettled(groups.map(group => this.deliver({ channel: channelName, event, group, content, headers, messageId })));
		const failed = results.flatMap((r, i) => (r.status === "rejected" ? [`${groups[i]}: ${errorText(r.reason)}`] : []));
		if (failed.length > 0) {
			const first = results.find(r => r.status === "rejected") as PromiseRejectedResult;
			const err = asError(first.reason);
			if (failed.length > 1) err.message = `${err.message} (and ${failed.slice(1).join("; ")})`;
			throw err;
		}
	}

	/** One group's delivery: handled, or parked in the dead-letter table; rejects if neither. */
	private async deliver(env: Envelope): Promise<void> {
		const outcome = await this.attempt(env);
		if (outcome.ok) return;
		const headers = {
			...env.headers,
			[H.originalChannel]: env.channel,
			[H.originalGroup]: env.group,
			[H.errorMessage]: errorText(outcome.error),
			[H.errorName]: outcome.error.name,
			[H.attempts]: outcome.attempts,
			[H.deathTime]: new Date().toISOString(),
		};
		await this.store.insert({
			messageId: env.messageId,
			group: env.group,
			channel: env.channel,
			event: env.event,
			payload: env.content,
			headers,
			error: errorText(outcome.error),
			attempts: outcome.attempts,
			deadAt: headers[H.deathTime],
		});
		this.logger.error(`Message ${env.messageId} of '${env.event}' failed ${outcome.attempts} time(s) in '${env.group}'; parked in the dead-letter table.`);
	}

	/** Runs the group's handler until it succeeds or `maxRetries` attempts failed. */
	private async attempt(env: Envelope): Promise<Outcome> {
		for (let attempt = 1; ; attempt++) {
			const chan = await this.subscriber(env);
			const max = Math.max(1, chan.maxRetries ?? this.settings.maxRetries);
			const raw: LocalMessage = {
				messageId: env.messageId,
				channel: env.channel,
				group: env.group,
				headers: attempt > 1 ? { ...env.headers, [H.redeliveredCount]: attempt - 1 } : { ...env.headers },
				attempt,
				redelivered: attempt > 1,
			};
			const id = `${env.messageId}:${attempt}:${randomUUID()}`;
			this.addChannelActiveMessages(chan.id, [id]);
			try {
				// A fresh copy per attempt, as a redelivery would be: a handler's changes never leak.
				await chan.handler(this.serializer.deserialize(env.content, ""), raw);
				return { ok: true, attempts: attempt };
			} catch (err) {
				this.metricsIncrement(C.METRIC_CHANNELS_MESSAGES_ERRORS_TOTAL, chan as never);
				if (attempt >= max) return { ok: false, attempts: attempt, error: asError(err) };
				const delay = backoff(attempt, this.settings.retryDelayMs, this.settings.maxRetryDelayMs);
				this.logger.warn(`Handler of '${env.event}' (${env.group}) failed on ${env.messageId} (attempt ${attempt}/${max}); retrying in ${delay} ms.`, errorText(err));
				this.metricsIncrement(C.METRIC_CHANNELS_MESSAGES_RETRIES_TOTAL, chan as never);
			} finally {
				if (this.activeMessages.has(chan.id)) this.removeChannelActiveMessages(chan.id, [id]);
			}
			await sleep(backoff(attempt, this.settings.retryDelayMs, this.settings.maxRetryDelayMs));
		}
	}

	/** A subscribed consumer of the group (round-robin among several), waiting a bounded time for one. */
	private async subscriber(env: Envelope): Promise<ChannelDef> {
		const key = this.key(env.channel, env.group);
		const deadline = Date.now() + this.settings.subscribeWaitMs;
		for (;;) {
			if (this.stopping || this.stopped)
				throw new Errors.MoleculerRetryableError(`The channel adapter stopped before '${env.group}' handled ${env.messageId}`, 503, "CHANNELS_STOPPING");
			const list = this.connected ? (this.subscribers.get(key) ?? []).filter(c => !c.unsubscribing) : [];
			if (list.length > 0) {
				const n = (this.turn.get(key) ?? 0) % list.length;
				this.turn.set(key, n + 1);
				return list[n];
			}
			const left = deadline - Date.now();
			// A stopping broker will not subscribe anyone again: fail now rather than delay its stop.
			if (left <= 0 || (this.broker as unknown as { stopping?: boolean }).stopping)
				throw new Errors.MoleculerRetryableError(
					`No consumer of group '${env.group}' for '${env.event}' is subscribed in this process (waited ${this.settings.subscribeWaitMs} ms): not delivered`,
					503,
					"CHANNEL_NO_CONSUMER",
					{ group: env.group, event: env.event },
				);
			await new Promise<void>(resolve => {
				const done = () => {
					clearTimeout(timer);
					this.wakers.delete(done);
					resolve();
				};
				const timer = setTimeout(done, left);
				this.wakers.add(done);
			});
		}
	}

	private wake(): void {
		for (const w of [...this.wakers]) w();
	}

	private key(channel: string, group: string): string {
		return `${channel}\u0000${group}`;
	}

	override parseMessageHeaders(raw: LocalMessage | undefined): object {
		// The middleware reads $requestID/$meta from here to build the handler's Context.
		return (raw ? raw.headers : null) as object;
	}

	// ---- dead letters -------------------------------------------------------------------------

	rowToDeadLetter(row: DeadLetterRow): DeadLetter {
		return rowToDeadLetter(row, this.serializer ? buf => this.serializer.deserialize(buf, "") : undefined);
	}

	deadLetterDepth(group: string): Promise<number> {
		return this.store.count(group);
	}

	async listDeadLetters(query: DeadLetterQuery = {}): Promise<DeadLetter[]> {
		const rows = await this.store.select({ group: query.group, limit: query.limit });
		return rows.map(r => this.rowToDeadLetter(r));
	}

	async replayDeadLetters(query: ReplayQuery): Promise<ReplayResult> {
		if (!query.all && !query.messageId) throw new Errors.MoleculerClientError("replay needs a messageId or all", 422, "VALIDATION_ERROR");
		const rows = await this.store.select({ group: query.group, messageId: query.messageId, all: query.all, limit: 100_000 });
		return this.replayRows(rows);
	}

	/** Replays rows: handled → the row is deleted; failed again → the row stays with the new error. */
	private async replayRows(rows: DeadLetterRow[]): Promise<ReplayResult> {
		const result: ReplayResult = { replayed: [], failed: [] };
		for (const row of rows) {
			if (this.replaying.has(row.id)) continue;
			this.replaying.add(row.id);
			const entry = { messageId: row.message_id, group: row.grp, event: row.event };
			try {
				const dead = JSON.parse(row.headers) as Record<string, unknown>;
				const headers = {
					...withoutHeaders(dead, DEAD_LETTER_HEADERS),
					[H.replayedAt]: new Date().toISOString(),
					[H.replayCount]: row.replay_count + 1,
				};
				const env: Envelope = { channel: row.channel, event: row.event, group: row.grp, content: row.payload, headers, messageId: row.message_id ?? randomUUID() };
				let outcome: Outcome;
				try {
					outcome = await this.attempt(env);
				} catch (err) {
					// No consumer (yet): the row stays as it was.
					await this.store.clearReplayRequest(row.id, row.error ?? "");
					result.failed.push({ ...entry, error: errorText(err) });
					continue;
				}
				if (outcome.ok) {
					await this.store.remove(row.id);
					result.replayed.push(entry);
				} else {
					await this.store.failedAgain(row.id, errorText(outcome.error), outcome.attempts, {
						...headers,
						[H.originalChannel]: row.channel,
						[H.originalGroup]: row.grp,
						[H.errorMessage]: errorText(outcome.error),
						[H.errorName]: outcome.error.name,
						[H.attempts]: outcome.attempts,
						[H.deathTime]: new Date().toISOString(),
					});
					result.failed.push({ ...entry, error: errorText(outcome.error) });
				}
			} finally {
				this.replaying.delete(row.id);
			}
		}
		return result;
	}

	/** Rows flagged by `npm run dlq -- replay` from another process. */
	private async replayRequested(): Promise<void> {
		if (!this.connected || this.stopping) return;
		const rows = await this.store.replayRequested();
		if (rows.length === 0) return;
		const res = await this.replayRows(rows);
		this.logger.info(`Replayed ${res.replayed.length} requested dead letter(s); ${res.failed.length} failed again.`);
	}

	/** The groups a replay of everything looks at (for symmetry with the AMQP adapter). */
	knownGroups(): string[] {
		return knownGroups(this.settings.consumerGroups);
	}
}
