// node deployment/check-grafana.mjs <dashboard.json> <rules-out.yml>
// Checks a Grafana dashboard's structure (what Grafana needs to import it: title, uid,
// schemaVersion, panels on the 24-column grid with unique ids, a Prometheus datasource and
// queries), then writes every panel query as a recording rule into <rules-out.yml>, so that
// `promtool check rules` parses each one (Grafana's $__rate_interval becomes 5m).
import fs from "node:fs";

const [file, out] = process.argv.slice(2);
const dash = JSON.parse(fs.readFileSync(file, "utf8"));
const errors = [];
const need = (ok, what) => ok || errors.push(what);

need(typeof dash.title === "string" && dash.title.length > 0, "title");
need(typeof dash.uid === "string" && /^[a-zA-Z0-9_-]{1,40}$/.test(dash.uid), "uid (1-40 letters, digits, - or _)");
need(Number.isInteger(dash.schemaVersion) && dash.schemaVersion >= 30, "schemaVersion (integer >= 30)");
need(Array.isArray(dash.panels) && dash.panels.length > 0, "panels");
const variables = new Set((dash.templating?.list ?? []).map(v => v.name));
const ids = new Set();
const rules = [];
for (const p of dash.panels ?? []) {
	const at = `panel ${p.id} "${p.title}"`;
	need(Number.isInteger(p.id) && !ids.has(p.id), `${at}: a unique integer id`);
	ids.add(p.id);
	need(["timeseries", "stat", "gauge", "table", "bargauge", "text"].includes(p.type), `${at}: a known type`);
	const g = p.gridPos ?? {};
	need([g.x, g.y, g.w, g.h].every(Number.isInteger) && g.x >= 0 && g.w > 0 && g.x + g.w <= 24 && g.h > 0, `${at}: gridPos within 24 columns`);
	need(p.datasource?.type === "prometheus", `${at}: a Prometheus datasource`);
	const uidVar = /^\$\{?(\w+)\}?$/.exec(p.datasource?.uid ?? "");
	need(!uidVar || variables.has(uidVar[1]), `${at}: its datasource variable is defined in templating`);
	need(Array.isArray(p.targets) && p.targets.length > 0, `${at}: targets`);
	const refIds = new Set();
	for (const t of p.targets ?? []) {
		need(typeof t.refId === "string" && !refIds.has(t.refId), `${at}: unique refIds`);
		refIds.add(t.refId);
		need(typeof t.expr === "string" && t.expr.trim() !== "", `${at} ${t.refId}: an expr`);
		if (typeof t.expr === "string")
			rules.push({ record: `grafana:panel_${p.id}_${t.refId}`, expr: t.expr.replaceAll("$__rate_interval", "5m") });
	}
}
if (errors.length > 0) {
	console.error(`${file}: ${errors.length} problem(s):\n  ${errors.join("\n  ")}`);
	process.exit(1);
}
// JSON strings are valid YAML scalars: no YAML library needed.
const yaml = ["groups:", "  - name: grafana-panels", "    rules:", ...rules.flatMap(r => [`      - record: ${r.record}`, `        expr: ${JSON.stringify(r.expr)}`])];
fs.writeFileSync(out, yaml.join("\n") + "\n");
console.log(`${file}: ${dash.panels.length} panels, ${rules.length} queries (parsed by promtool below)`);
