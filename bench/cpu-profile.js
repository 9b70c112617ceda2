/**
 * Preload for `npm run bench -- --profile <dir>`: Node 20 refuses `--cpu-prof` in NODE_OPTIONS,
 * but takes `--require`, which child processes (cluster.js's runners) inherit. Starts V8's sampling
 * profiler at load and writes <dir>/<pid>-<SERVICES or script>.cpuprofile when the process exits.
 * Plain JavaScript so that it loads without ts-node. Env: CARSI_CPU_PROFILE_DIR.
 */
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const inspector = require("node:inspector");

const dir = process.env.CARSI_CPU_PROFILE_DIR;
if (dir) {
	const session = new inspector.Session();
	session.connect();
	session.post("Profiler.enable");
	session.post("Profiler.setSamplingInterval", { interval: 500 }); // µs
	session.post("Profiler.start");
	const label = (process.env.SERVICES || path.basename(process.argv[1] || "node")).replace(/[^\w.-]+/g, "_");
	process.on("exit", () => {
		// Same-thread inspector sessions answer synchronously, so this completes inside "exit".
		session.post("Profiler.stop", (err, res) => {
			if (err) return;
			fs.mkdirSync(dir, { recursive: true });
			fs.writeFileSync(path.join(dir, `${process.pid}-${label}.cpuprofile`), JSON.stringify(res.profile));
		});
	});
}
