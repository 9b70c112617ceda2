/**
 * lib/amqp-transporter: a publish that amqplib refuses at once (its channel is closing while the
 * connection to RabbitMQ goes down) is a rejected promise, never a throw out of send(). The real
 * cut is test/faults/rabbitmq-cut.spec.ts; this pins the contract with amqplib's own error.
 */
import { Transporters } from "moleculer";
import { SafeAmqpTransporter } from "../../lib/amqp-transporter";

// amqplib's error for a publish on a closing channel (lib/channel.js), as it throws it.
const closing = () => Object.assign(new Error("Channel closing"), { name: "IllegalOperationError" });
const closingChannel = {
	publish() {
		throw closing();
	},
	sendToQueue() {
		throw closing();
	},
};

describe("SafeAmqpTransporter", () => {
	it("answers a publish on a closing channel with a rejected promise", async () => {
		const tx = new SafeAmqpTransporter({ url: "amqp://127.0.0.1:1" });
		Object.assign(tx, { channel: closingChannel, opts: { messageOptions: {} } });
		let result: Promise<void> | undefined;
		expect(() => (result = tx.send("MOL.HEARTBEAT", Buffer.from("{}"), { packet: {} }))).not.toThrow();
		await expect(result).rejects.toThrow("Channel closing");
		await expect(tx.send("MOL.REQB.products.get", Buffer.from("{}"), { balanced: true, packet: {} })).rejects.toThrow("Channel closing");
	});

	it("is what Moleculer's own AMQP transporter is not", () => {
		const stock = new Transporters.AMQP({ url: "amqp://127.0.0.1:1" });
		Object.assign(stock, { channel: closingChannel, opts: { messageOptions: {} }, broker: { Promise } });
		expect(() => (stock as unknown as { send(t: string, d: Buffer, m: object): unknown }).send("MOL.HEARTBEAT", Buffer.from("{}"), { packet: {} })).toThrow("Channel closing");
	});
});
