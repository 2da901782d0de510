// Prints the operator scope OpenClaw 2026.9.6 requires for each named gateway method, asked of
// OpenClaw's own authoriser (its bundled `method-scopes` module), not re-derived by hand.
//
//   node_modules/.bin/node method-scopes.mjs usage.status sessions.usage sessions.list …
//
// Output: one JSON object per line {method, classified, leastPrivilege, withRead, withWrite,
// withNone}; "allowed" or "missing <scope>" for a connection holding only that scope set.
// Needs node >= 24.16 (the pinned runtime above). The module's file name and its minified export
// letters are those of 2026.9.6; another release needs them looked up again.
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const dist = join(dirname(fileURLToPath(import.meta.url)), "node_modules", "openclaw", "dist");
// Two chunks share the prefix; the one with the core descriptors exports the authoriser.
const file = readdirSync(dist).find((f) => /^method-scopes-[\w-]+\.mjs$/.test(f) && readFileSync(join(dist, f), "utf8").includes("function authorizeOperatorScopesForMethod"));
if (!file) throw new Error(`no method-scopes-*.mjs in ${dist}`);
const m = await import(pathToFileURL(join(dist, file)).href);
// 2026.9.6: c = resolveLeastPrivilegeOperatorScopesForMethod, n = authorizeOperatorScopesForMethod,
// f = isCoreGatewayMethodClassified (see the module's export line).
const [leastPrivilege, authorize, classified] = [m.c, m.n, m.f];
if (![leastPrivilege, authorize, classified].every((f) => typeof f === "function")) throw new Error(`unexpected exports in ${file}`);
const verdict = (method, scopes) => {
  const r = authorize(method, scopes, {});
  return r.allowed ? "allowed" : `missing ${r.missingScope}`;
};
for (const method of process.argv.slice(2)) {
  process.stdout.write(
    JSON.stringify({
      method,
      classified: classified(method),
      leastPrivilege: leastPrivilege(method, {}),
      withRead: verdict(method, ["operator.read"]),
      withWrite: verdict(method, ["operator.write"]),
      withNone: verdict(method, []),
    }) + "\n",
  );
}
