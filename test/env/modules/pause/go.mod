// The pause process of the test node's pod sandboxes (built into a local pause image,
// since the node pulls nothing).
module aimesh.test/env/pause

go 1.26.0
