/**
 * The main menu with the original program's numbering: 1 chat, 2 peers, 3 history, 4 connect,
 * 5 (or q) quit. Slash commands work here too. A bad choice gets a one-line hint.
 *
 * @module
 */

import {
  completeLine,
  connect,
  isPeer,
  type Outcome,
  pickPeer,
  QUIT,
  runCommand,
  showHistory,
  showPeers,
} from "./actions.ts";
import type { App } from "./app.ts";
import { chatView } from "./chat.ts";
import { menuReminder, menuText } from "./format.ts";
import { sanitize } from "./screen.ts";

/**
 * Shows the menu and runs choices until the user quits or input ends.
 *
 * @example
 * ```ts
 * await runMenu(app);
 * ```
 */
export async function runMenu(app: App): Promise<void> {
  app.print(menuText(app.style));
  const complete = completeLine(app);
  for (;;) {
    const line = await app.prompter.readLine(`${app.style.bold("p2pchat")}> `, {
      history: app.menuHistory,
      complete,
    });
    if (line === null) return;
    const choice = line.trim();
    if (choice === "") continue;
    let outcome: Outcome;
    if (choice.startsWith("/")) {
      outcome = await runCommand(app, choice, null);
    } else {
      const chosen = await menuChoice(app, choice.toLowerCase());
      if (chosen === "bad") {
        app.error(
          `"${sanitize(choice.slice(0, 20))}" is not a menu option: type 1 to 5, q to quit, ` +
            "or /help",
        );
        continue;
      }
      outcome = chosen;
    }
    while (outcome?.kind === "chat") {
      outcome = await chatView(app, outcome.peer);
      if (outcome === null) app.print(menuText(app.style));
    }
    if (outcome?.kind === "quit") return;
    app.print(menuReminder(app.style));
  }
}

async function menuChoice(app: App, choice: string): Promise<Outcome | "bad"> {
  switch (choice) {
    case "1": {
      const peer = await pickPeer(app, "Chat with");
      return isPeer(peer) ? { kind: "chat", peer } : peer;
    }
    case "2":
      showPeers(app);
      return null;
    case "3": {
      const peer = await pickPeer(app, "History with");
      if (!isPeer(peer)) return peer;
      await showHistory(app, peer);
      return null;
    }
    case "4":
      return await connect(app, null);
    case "5":
    case "q":
    case "quit":
    case "exit":
      return QUIT;
    default:
      return "bad";
  }
}
