/**
 * Readiness of a node: every dependency of what it runs. The gateway answers it on `/ready`
 * (with a node of every routed service on top); every other node on `METRICS_PORT`'s `/ready`.
 */
import type { Service, ServiceBroker } from "moleculer";
import { cacherReady } from "./cacher";
import { LocalAdapter } from "./channels";

export interface Readiness {
	ok: boolean;
	checks: Record<string, "up" | "down">;
}

/** Its services' databases, the cacher, the transporter, the events' RabbitMQ; and a node of each of `services`. */
export async function nodeReadiness(broker: ServiceBroker, services: readonly string[] = []): Promise<Readiness> {
	const checks: Record<string, "up" | "down"> = {};
	const local = broker.services as Array<Service & { isDbReady?: () => Promise<boolean> }>;
	await Promise.all(
		local
			.filter(s => typeof s.isDbReady === "function")
			.map(async s => {
				checks[`database:${s.name}`] = (await s.isDbReady!()) ? "up" : "down";
			}),
	);
	if (broker.cacher) checks.cacher = cacherReady(broker.cacher) ? "up" : "down";
	if (broker.transit) checks.transporter = broker.transit.connected ? "up" : "down";
	// The business events' RabbitMQ connection (lib/channels), where it is configured.
	const events = broker.channelAdapter;
	if (events && !(events instanceof LocalAdapter)) checks.events = events.connected ? "up" : "down";
	if (services.length > 0) {
		const available = new Set((broker.registry.getServiceList({ onlyAvailable: true }) as Array<{ name: string }>).map(s => s.name));
		for (const name of services) checks[`service:${name}`] = available.has(name) ? "up" : "down";
	}
	return { ok: Object.values(checks).every(v => v === "up"), checks };
}
