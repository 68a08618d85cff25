// Prints the NATS users and least-privilege permissions of a Postroom configuration, generated
// from @postroom/contracts. Run:
//   pnpm --filter @postroom/runtime nats-auth [--per-tenant] [--helm] [--secret NAME] [postroom.yaml]
// Without --helm: nats-server's `authorization { ... }` block, each password read by nats-server
// from the environment variable NATS_PASSWORD_<USER>. With --helm: values (JSON, which Helm reads
// as YAML) for the official NATS chart, the passwords from the Secret NAME (default
// postroom-nats-users) whose keys are the user names — the Secret the Postroom chart mounts.
import { loadConfigFile } from "@postroom/config";
import { deploymentUsers, names, natsAuthorizationBlock, natsHelmValues, natsPasswordVariable } from "@postroom/contracts";

const args = process.argv.slice(2).filter((a) => a !== "--");
const flag = (name: string) => args.includes(name);
const secretAt = args.indexOf("--secret");
const secret = secretAt >= 0 ? args[secretAt + 1] : undefined;
const path = args.find((a, i) => !a.startsWith("--") && (secretAt < 0 || i !== secretAt + 1)) ?? process.env.POSTROOM_CONFIG;
if (!path) {
  console.error("name the configuration file (or set POSTROOM_CONFIG): pnpm --filter @postroom/runtime nats-auth postroom.yaml");
  process.exit(2);
}
const config = await loadConfigFile(path);
const n = names(config.nats.namespace);
const tenants = config.tenants.map((t) => ({ id: t.id, mailboxes: t.mailboxes.map((m) => ({ id: m.id })) }));
const users = deploymentUsers(tenants, flag("--per-tenant"));
if (flag("--helm")) {
  console.log(JSON.stringify(natsHelmValues(n, users, tenants, secret ?? "postroom-nats-users"), null, 2));
} else {
  console.log(natsAuthorizationBlock(n, users.map((u) => ({ ...u, password: `$${natsPasswordVariable(u.user)}` })), tenants));
}
