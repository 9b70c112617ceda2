/**
 * Cache-aside through Moleculer's cacher (Redis when CACHER is set, Memory otherwise; with
 * CACHER=off every read goes to the database and answers MISS).
 *
 * Read: look in the cache; a hit returns; a miss takes the key's lock, looks again, reads the
 * database, stores, returns. The lock (redlock on Redis) lets one caller fill a hot key while the
 * others wait for its value: no thundering herd on the database.
 *
 * Write: after the database committed, the entity's key is deleted under the same lock, so a fill
 * that read the old row before the commit has landed before the delete, and a fill after it reads
 * the new row. Lists are keyed by a generation that every write replaces, so a list filled from
 * before a write is stored under a generation nobody reads any more. With a per-node Memory cacher
 * in a cluster, every other node of the service is told to do the same and answers before the
 * write returns. The outcome: no client reads a stale entity once a write has answered.
 *
 * The caller learns HIT or MISS through `ctx.meta.$cache` (the gateway's X-Cache header).
 */
import { randomUUID } from "node:crypto";
import type { Context, ServiceSchema, ServiceBroker } from "moleculer";
import { isSharedCacher } from "../lib/cacher";
import { countMetric, METRICS } from "../lib/metrics";

export type CacheStatus = "HIT" | "MISS";
export interface CacheMeta {
	$cache?: CacheStatus;
	/**
	 * Set by the gateway on a route whose answer it only sends on as JSON: the action may answer
	 * a cache hit as the entry's stored JSON text (cachedEntity's `asText`) instead of an object.
	 */
	$jsonText?: boolean;
}

interface CacherLike {
	get(key: string): Promise<unknown>;
	/** The entry's stored JSON text, where the cacher keeps JSON (lib/redis-cacher). */
	getText?(key: string): Promise<string | null>;
	/** Changes when the cacher goes down or comes back (lib/redis-cacher); none on Memory. */
	readonly epoch?: number;
	set(key: string, value: unknown, ttl?: number): Promise<unknown>;
	del(key: string | string[]): Promise<unknown>;
	lock(key: string, ttl?: number): Promise<() => Promise<unknown>>;
}

export interface CacheSettings {
	/** Seconds an entry lives in the cache. */
	cacheTtlSeconds: number;
	/** Milliseconds a fill may hold a key's lock before it expires (redlock needs milliseconds). */
	cacheLockTtlMs?: number;
}

export interface CacheMethods {
	/**
	 * The entity from the cache, or loaded and cached. `asText`: a hit from a cacher that stores
	 * JSON text (Redis) answers that text as it is, for a caller that sends it on as JSON; a miss,
	 * or a cacher keeping objects (Memory), answers the object.
	 */
	cachedEntity<T>(ctx: Context<unknown, CacheMeta>, id: number | string, load: () => Promise<T | null>, asText?: boolean): Promise<T | string | null>;
	cachedList<T>(ctx: Context<unknown, CacheMeta>, params: Record<string, unknown>, load: () => Promise<T>): Promise<T>;
	invalidateEntities(ids: Array<number | string>): Promise<void>;
}

interface CacheThis {
	name: string;
	broker: ServiceBroker & { cacher?: CacherLike };
	settings: CacheSettings;
	logger: { warn(...a: unknown[]): void };
	cacheFill<T>(key: string, ctx: Context<unknown, CacheMeta>, load: () => Promise<T>, asText?: boolean): Promise<T | string>;
	invalidateLocally(ids: Array<number | string>): Promise<void>;
}

/** Tells the caller (X-Cache) and counts it per action (carsi.cache.hits / misses). */
function markCache(svc: CacheThis, ctx: Context<unknown, CacheMeta>, status: CacheStatus): void {
	ctx.meta.$cache = status;
	countMetric(svc.broker, status === "HIT" ? METRICS.cacheHits : METRICS.cacheMisses, { action: ctx.action?.name ?? svc.name });
}

export const CacheMixin: Partial<ServiceSchema> = {
	settings: { cacheTtlSeconds: 300, cacheLockTtlMs: 10_000 },

	actions: {
		/** Cleans this node's copy: called by a node that wrote, when every node has its own cache. */
		cacheInvalidate: {
			visibility: "public",
			params: { ids: { type: "array", items: ["number", "string"] } },
			handler(this: CacheThis, ctx: Context<{ ids: Array<number | string> }>) {
				return this.invalidateLocally(ctx.params.ids);
			},
		},
	},

	methods: {
		cachedEntity<T>(this: CacheThis, ctx: Context<unknown, CacheMeta>, id: number | string, load: () => Promise<T | null>, asText = false) {
			return this.cacheFill(`${this.name}:entity:${id}`, ctx, load, asText);
		},

		async cachedList<T>(this: CacheThis, ctx: Context<unknown, CacheMeta>, params: Record<string, unknown>, load: () => Promise<T>) {
			const cacher = this.broker.cacher;
			if (!cacher) return this.cacheFill("", ctx, load);
			const generation = (await cacher.get(`${this.name}:list-generation`)) ?? "0";
			return this.cacheFill(`${this.name}:list:${generation}:${JSON.stringify(params)}`, ctx, load);
		},

		async cacheFill<T>(this: CacheThis, key: string, ctx: Context<unknown, CacheMeta>, load: () => Promise<T>, asText = false): Promise<T | string> {
			const cacher = this.broker.cacher;
			if (!cacher) {
				// CACHER=off: every read is a miss.
				markCache(this, ctx, "MISS");
				return load();
			}
			const cached = asText && cacher.getText ? await cacher.getText(key) : await cacher.get(key);
			if (cached != null) {
				markCache(this, ctx, "HIT");
				return cached as T;
			}
			let unlock: () => Promise<unknown>;
			try {
				unlock = await cacher.lock(key, this.settings.cacheLockTtlMs);
			} catch {
				// The key's lock stayed taken (a stalled fill): answer from the database, cache nothing.
				markCache(this, ctx, "MISS");
				return load();
			}
			try {
				// Another caller may have filled the key while this one waited for the lock.
				const filled = await cacher.get(key);
				if (filled != null) {
					markCache(this, ctx, "HIT");
					return filled as T;
				}
				// Stored only if the cache neither went down nor came back while the database was read:
				// across an outage no lock orders this fill with the writers (lib/redis-cacher epoch).
				const epoch = cacher.epoch;
				const value = await load();
				// Absent rows are not cached: a 404 stays cheap enough and never outlives a create.
				if (value != null && cacher.epoch === epoch) await cacher.set(key, value, this.settings.cacheTtlSeconds);
				markCache(this, ctx, "MISS");
				return value;
			} finally {
				await unlock();
			}
		},

		async invalidateEntities(this: CacheThis, ids: Array<number | string>): Promise<void> {
			await this.invalidateLocally(ids);
			if (!this.broker.cacher || isSharedCacher(this.broker.cacher) || !this.broker.transit) return;
			// Per-node caches: every other node of this service cleans its copy before we answer.
			const nodeIDs = this.broker.registry
				.getServiceList({ onlyAvailable: true, skipInternal: true })
				.filter(s => s.name === this.name && s.nodeID && s.nodeID !== this.broker.nodeID)
				.map(s => s.nodeID as string);
			await Promise.all(
				[...new Set(nodeIDs)].map(nodeID =>
					this.broker.call(`${this.name}.cacheInvalidate`, { ids }, { nodeID }).catch((err: Error) => {
						this.logger.warn(`Could not clean the cache of node ${nodeID}: ${err.message}`);
					}),
				),
			);
		},

		async invalidateLocally(this: CacheThis, ids: Array<number | string>): Promise<void> {
			const cacher = this.broker.cacher;
			if (!cacher) return;
			await Promise.all(
				ids.map(async id => {
					const key = `${this.name}:entity:${id}`;
					let unlock: () => Promise<unknown>;
					try {
						unlock = await cacher.lock(key, this.settings.cacheLockTtlMs);
					} catch {
						// The lock stayed taken past its retries: delete without it rather than answer
						// with the entry in place. Only a fill stalled longer than that can still land.
						this.logger.warn(`Cache lock of ${key} not acquired; deleting without it`);
						await cacher.del(key);
						return;
					}
					try {
						await cacher.del(key);
					} finally {
						await unlock();
					}
				}),
			);
			// A new generation retires every cached list at once (a list may hold any entity).
			await cacher.set(`${this.name}:list-generation`, randomUUID(), 0);
		},
	},

};
