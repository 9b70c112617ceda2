/**
 * Moleculer's AMQP transporter with one failure mended: `send()` calls amqplib's publish, which
 * throws at once (IllegalOperationError "Channel closing") while the connection to RabbitMQ is
 * going down. A throw there escapes the promise chain its callers attach `.catch` to: from the
 * heartbeat timer it is an uncaught exception that ends the process (seen in the RabbitMQ-cut
 * fault test, test/faults/rabbitmq-cut.spec.ts). Here it is a rejected promise, which the heartbeat
 * logs and a request answers as its error (then retried or refused by the broker's policy).
 */
import { Transporters } from "moleculer";

type Send = (topic: string, data: Buffer, meta: object) => Promise<void>;

export class SafeAmqpTransporter extends Transporters.AMQP {
	override send(topic: string, data: Buffer, meta: object): Promise<void> {
		try {
			return (Transporters.AMQP.prototype as unknown as { send: Send }).send.call(this, topic, data, meta);
		} catch (err) {
			return Promise.reject(err);
		}
	}
}
