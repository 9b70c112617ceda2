/**
 * Stock reservations on PostgreSQL: the cases of test/unit/products-reservations.spec.ts.
 */
import type { ServiceBroker } from "moleculer";
import { createNode } from "../support/broker";
import { reservationCases } from "../support/reservations";
import { requireServers } from "../support/servers";
import { TestDatabases } from "../support/pg";

const dbs = new TestDatabases(["products"] as const);
let broker: ServiceBroker;

beforeAll(async () => {
	await requireServers("postgres");
	await dbs.create();
	broker = createNode({ services: ["products"], databaseUrls: dbs.urls, settings: { products: { reservationSweepMs: 0 } } });
	await broker.start();
});
afterAll(async () => {
	await broker?.stop();
	await dbs.drop();
});

reservationCases(() => ({ broker }));
