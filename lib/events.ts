/**
 * Business events: plain records with an id and a time, typed once for producer and consumer.
 * Every payload carries { eventId, occurredAt } (API.md "Events").
 */
import { randomUUID } from "node:crypto";

export interface PublicUser {
	id: number;
	email: string;
	name: string;
	role: "customer" | "admin";
	createdAt: string;
}

export interface EventEnvelope {
	eventId: string;
	occurredAt: string;
}

export interface UserRegistered extends EventEnvelope {
	user: PublicUser;
}

export interface BusinessEvents {
	"user.registered": UserRegistered;
}

export type BusinessEventName = keyof BusinessEvents;

export function envelope(): EventEnvelope {
	return { eventId: randomUUID(), occurredAt: new Date().toISOString() };
}
