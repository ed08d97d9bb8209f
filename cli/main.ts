#!/usr/bin/env node
import { runValidate } from './validate.js';

const USAGE = `usage: aimesh <command> [arguments]

commands:
  validate <file-or-folder>...   check AiService and Saga resources against the aimesh.io/v1alpha1 schemas
  crds                           print the CustomResourceDefinitions as YAML
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...args] = argv;
  switch (command) {
    case 'validate':
      return runValidate(args);
    case 'crds': {
      const { generatedFiles } = await import('../api/generated.js');
      process.stdout.write(
        Object.entries(generatedFiles())
          .filter(([path]) => path.startsWith('crds/'))
          .map(([, content]) => content)
          .join('---\n'),
      );
      return 0;
    }
    case undefined:
    case 'help':
    case '--help':
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`aimesh: unknown command "${command}"\n${USAGE}`);
      return 2;
  }
}

process.exitCode = await main(process.argv.slice(2));
