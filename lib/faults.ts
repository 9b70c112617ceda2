/**
 * Crash points for the tests that prove nothing is lost when a node dies at the worst moment
 * (CARSI_FAULT=<point>). Unset in every real deployment; a named point that is set kills this
 * process with SIGKILL: no cleanup, no graceful stop, exactly like a crash.
 */
import { getConfig } from "./config";

export type FaultPoint = "orders.after-reserve" | "orders.after-commit";

export function faultPoint(point: FaultPoint): void {
	if (getConfig().faultPoint === point) process.kill(process.pid, "SIGKILL");
}
