/**
 * Stock reservations on SQLite (the embedded default); the same cases run on PostgreSQL in
 * test/integration/products-reservations-postgres.spec.ts.
 */
import type { ServiceBroker } from "moleculer";
import { createNode, sqliteUrls, tempDir } from "../support/broker";
import { reservationCases } from "../support/reservations";

let broker: ServiceBroker;
let tmp: ReturnType<typeof tempDir>;

beforeAll(async () => {
	tmp = tempDir();
	broker = createNode({ services: ["products"], databaseUrls: sqliteUrls(tmp.dir, ["products"]), settings: { products: { reservationSweepMs: 0 } } });
	await broker.start();
});
afterAll(async () => {
	await broker.stop();
	tmp.remove();
});

reservationCases(() => ({ broker }));
