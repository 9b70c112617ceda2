/**
 * The cacher of a node: Redis when CACHER is set (shared by every node), none with CACHER=off,
 * Memory otherwise.
 */
import { Cachers } from "moleculer";
import type { Config } from "./config";
import { SafeRedisCacher } from "./redis-cacher";

export function buildCacher(
	config: Pick<Config, "cacher" | "cacheTtlSeconds" | "namespace"> & Partial<Pick<Config, "cacheEnabled">>,
): Cachers.Base | undefined {
	if (config.cacheEnabled === false) return undefined;
	if (config.cacher) {
		return new SafeRedisCacher({ url: config.cacher, ttl: config.cacheTtlSeconds, prefix: `carsi-${config.namespace}` });
	}
	return new Cachers.Memory({ ttl: config.cacheTtlSeconds });
}

/** True when one clean reaches every node's view (Redis); false for a per-node Memory cacher. */
export function isSharedCacher(cacher: unknown): boolean {
	return cacher instanceof SafeRedisCacher;
}

/** Ready to serve from the cache: Redis connected and flushed after any outage; Memory always. */
export function cacherReady(cacher: unknown): boolean {
	return cacher instanceof SafeRedisCacher ? cacher.available : true;
}
