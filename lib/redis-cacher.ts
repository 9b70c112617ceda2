/**
 * Moleculer's Redis cacher, made safe to lose Redis (extended the way Moleculer extends itself:
 * a subclass of the cacher).
 *
 * - Every operation resolves: with Redis down a read is a miss (the caller goes to the database)
 *   and a write or clean is skipped, so no answer ever depends on Redis being up.
 * - The outage is logged once when it starts and once when it ends, not per command.
 * - After an outage the cacher stays bypassed until it has flushed every key of its prefix:
 *   deletes that failed during the outage may have left entries that are now stale, and none of
 *   them may be served once Redis is back.
 * - Until ioredis is ready for the first time the cacher is bypassed too; `/ready` waits for it.
 */
import { Cachers, METRIC } from "moleculer";
import type { GenericObject, LoggerInstance, ServiceBroker } from "moleculer";
import type Redis from "ioredis";

export interface SafeRedisCacherOptions {
	url: string;
	/** Seconds. */
	ttl: number;
	prefix?: string;
	/** Milliseconds between attempts to flush and come back after an outage. */
	recoveryIntervalMs?: number;
}

type Unlock = () => Promise<void>;
/** Moleculer's metric names (its typings list only the metric types). */
const METRICS = METRIC as unknown as Record<"MOLECULER_CACHER_GET_TOTAL" | "MOLECULER_CACHER_GET_TIME" | "MOLECULER_CACHER_FOUND_TOTAL", string>;
const noUnlock: Unlock = () => Promise.resolve();

export class SafeRedisCacher extends Cachers.Redis {
	/** Serving from Redis: connected, and no outage since the last successful flush. */
	available = false;
	/** Every node shares one Redis, so one clean reaches what every node reads. */
	readonly shared = true;
	/**
	 * Changes each time the cacher goes down or comes back. A fill that read the database while
	 * the outage began or ended stores nothing (mixins/cache.mixin): across an outage no lock
	 * ordered it with the writers, whose deletes the outage skipped and the recovery's flush has
	 * already made, so its value may be older than a write already answered.
	 */
	epoch = 0;
	declare logger: LoggerInstance;
	declare client: Redis;
	private needsFlush = false;
	private flushing: Promise<void> | null = null;
	private recoveryTimer: NodeJS.Timeout | null = null;
	private readonly recoveryIntervalMs: number;

	constructor(opts: SafeRedisCacherOptions) {
		super({
			ttl: opts.ttl,
			prefix: opts.prefix,
			redis: {
				...parseRedisUrl(opts.url),
				// Fail fast instead of queueing while disconnected: a request must never wait on
				// a Redis that is not there (the offline queue would hold it until reconnect).
				enableOfflineQueue: false,
				maxRetriesPerRequest: 1,
				connectTimeout: 2000,
				commandTimeout: 1000,
				// Keep reconnecting, backing off to at most one attempt a second.
				retryStrategy: (times: number) => Math.min(times * 100, 1000),
			},
			// Redlock 4: short retry delays so that a hot miss waits milliseconds, not 200 ms steps.
			redlock: { retryCount: 300, retryDelay: 10, retryJitter: 10, driftFactor: 0.01 },
		});
		this.recoveryIntervalMs = opts.recoveryIntervalMs ?? 1000;
	}

	override init(broker: ServiceBroker): void {
		super.init(broker);

		const client = this.client;
		// The base class logs every ioredis error, once per reconnect attempt: replace that.
		client.removeAllListeners("error");
		client.removeAllListeners("ready");
		client.on("error", (err: Error) => this.markDown(err));
		client.on("close", () => this.markDown(new Error("connection closed")));
		client.on("ready", () => this.onReady());
	}

	override close(): Promise<unknown> {
		if (this.recoveryTimer) clearInterval(this.recoveryTimer);
		this.recoveryTimer = null;
		this.setAvailable(false);
		const client = this.client;
		client.removeAllListeners("close");
		client.removeAllListeners("error");
		client.on("error", () => undefined);
		return super.close().catch(() => client.disconnect());
	}

	override get(key: string): Promise<GenericObject | null> {
		if (!this.available) return Promise.resolve(null);
		return super.get(key).catch((err: Error) => {
			this.markDown(err);
			return null;
		});
	}

	/**
	 * An entry as the JSON text it is stored as (the cacher's serializer is JSON, the default), for
	 * a caller that sends it on as JSON: a hit is then neither parsed here nor written out again by
	 * the gateway. Null on a miss and while Redis is down, as `get`; counted as a `get`.
	 */
	getText(key: string): Promise<string | null> {
		if (!this.available) return Promise.resolve(null);
		const metrics = (this as unknown as { metrics: { increment(name: string): void; timer(name: string): () => void } }).metrics;
		metrics.increment(METRICS.MOLECULER_CACHER_GET_TOTAL);
		const timeEnd = metrics.timer(METRICS.MOLECULER_CACHER_GET_TIME);
		return this.client.get(this.prefix + key).then(
			text => {
				if (text != null) metrics.increment(METRICS.MOLECULER_CACHER_FOUND_TOTAL);
				timeEnd();
				return text;
			},
			(err: Error) => {
				this.markDown(err);
				return null;
			},
		);
	}

	override set(key: string, data: unknown, ttl?: number): Promise<unknown> {
		if (!this.available) return Promise.resolve(null);
		return super.set(key, data, ttl).catch((err: Error) => this.markDown(err));
	}

	override del(key: string | string[]): Promise<unknown> {
		// Down: the flush on recovery removes this key along with every other.
		if (!this.available) return Promise.resolve(null);
		return super.del(key).catch((err: Error) => this.markDown(err));
	}

	override clean(match: string | string[] = "*"): Promise<unknown> {
		if (!this.available) return Promise.resolve(null);
		return super.clean(match).catch((err: Error) => this.markDown(err));
	}

	/**
	 * Resolves with the unlock function; rejects only when Redis is up and the lock stayed taken
	 * for all of redlock's retries (the caller decides: a read skips the cache, a write deletes
	 * anyway). With Redis down there is nothing to order, so it resolves with a no-op.
	 */
	override lock(key: string | string[], ttl?: number): Promise<Unlock> {
		if (!this.available) return Promise.resolve(noUnlock);
		return (super.lock(key, ttl) as Promise<Unlock>)
			.then(unlock => () => unlock().catch(() => undefined))
			.catch((err: Error) => {
				if (this.client.status === "ready") throw err;
				this.markDown(err);
				return noUnlock;
			});
	}

	/** Moleculer's own cache middleware (an action's `cache:` option) reads `connected`. */
	private setAvailable(available: boolean): void {
		if (available !== this.available) this.epoch++;
		this.available = available;
		(this as unknown as { connected: boolean }).connected = available;
	}

	private markDown(err: Error): void {
		this.needsFlush = true;
		if (this.available) {
			this.setAvailable(false);
			this.logger.warn(`Redis cacher unavailable (${err.message}): reads go to the database until it is back.`);
		}
		this.scheduleRecovery();
	}

	private onReady(): void {
		if (!this.needsFlush) {
			if (!this.available) this.logger.info("Redis cacher connected.");
			this.setAvailable(true);
			return;
		}
		void this.recover();
	}

	private scheduleRecovery(): void {
		if (this.recoveryTimer) return;
		this.recoveryTimer = setInterval(() => {
			if (this.client.status === "ready") void this.recover();
		}, this.recoveryIntervalMs);
		this.recoveryTimer.unref();
	}

	/** Flush every key of our prefix, then serve from Redis again. */
	private recover(): Promise<void> {
		if (this.flushing) return this.flushing;
		this.flushing = super
			.clean("*")
			.then(() => {
				this.needsFlush = false;
				this.setAvailable(true);
				if (this.recoveryTimer) clearInterval(this.recoveryTimer);
				this.recoveryTimer = null;
				this.logger.info("Redis cacher is back; entries older than the outage were flushed.");
			})
			.catch(() => undefined)
			.finally(() => {
				this.flushing = null;
			});
		return this.flushing;
	}
}

function parseRedisUrl(url: string): Record<string, unknown> {
	const u = new URL(url);
	const opts: Record<string, unknown> = { host: u.hostname || "127.0.0.1", port: Number(u.port || 6379) };
	if (u.username) opts.username = decodeURIComponent(u.username);
	if (u.password) opts.password = decodeURIComponent(u.password);
	const db = u.pathname.replace("/", "");
	if (db) opts.db = Number(db);
	if (u.protocol === "rediss:") opts.tls = {};
	return opts;
}
