import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/**
 * The floors of the code, bottom to top. A folder may import from its own floor's folder
 * and from the floors below, never from above or from a sibling on its floor:
 *   lib (shared helpers) <- api (the contract) <- render (pure) <- cdk8s | operator | sidecar <- cli | tools
 * cdk8s (the constructs users import) sits beside the operator: both are built on render.
 */
const FLOORS = [['lib'], ['api'], ['render'], ['cdk8s', 'operator', 'sidecar'], ['cli', 'tools']];
const NOT_PRODUCT = ['test', 'bench', 'examples', 'scratch'];

function boundaries() {
  return FLOORS.flatMap((floor, level) =>
    floor.map((folder) => {
      const siblings = floor.filter((f) => f !== folder);
      // cli may run the generators (`aimesh crds`); the generators never import the cli.
      const above = FLOORS.slice(level + 1).flat();
      const allowedSibling = folder === 'cli' ? siblings.filter((s) => s !== 'tools') : siblings;
      const forbidden = [...above, ...allowedSibling, ...NOT_PRODUCT];
      return {
        files: [`${folder}/**/*.ts`],
        rules: {
          'no-restricted-imports': [
            'error',
            {
              patterns: [
                {
                  regex: `^(\\.\\./)+(${forbidden.join('|')})(/|$)`,
                  message: `${folder}/ is on a lower floor than these folders (${forbidden.join(', ')}): imports go one way, lib <- api <- render <- cdk8s | operator | sidecar <- cli | tools. Move the shared piece down instead.`,
                },
              ],
            },
          ],
        },
      };
    }),
  );
}

export default tseslint.config(
  { ignores: ['scratch/', 'dist/', 'node_modules/', 'coverage/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: 'readonly', console: 'readonly' } },
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
    },
  },
  ...boundaries(),
);
