/* libFuzzer target: framing + CBOR decoder + frame schema + request-argument
 * checks + boot config parser, i.e. every parser that sees host bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

static struct cb_item items[SM_MAX_ITEMS];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t total = 0;
	struct sm_err e;
	/* framed stream: walk frames like the agent does */
	size_t off = 0;
	while (off < size) {
		int r = proto_frame_len(data + off, size - off, SM_MAX_FRAME_BYTES, &total, &e);
		if (r <= 0)
			break;
		struct cb_doc d;
		struct frame_info fi;
		if (proto_check_frame(&d, data + off + 4, total - 4, items, SM_MAX_ITEMS,
				      SM_MAX_FRAME_BYTES - SM_DATA_OVERHEAD_BYTES, &fi, &e) == 0 &&
		    fi.kind == FK_REQ)
			args_check_op(&d, fi.op, fi.args, &e);
		off += total;
	}
	/* the raw input as an unframed item and as a boot config */
	struct cb_doc d;
	struct frame_info fi;
	if (proto_check_frame(&d, data, size, items, SM_MAX_ITEMS, 1 << 20, &fi, &e) == 0 &&
	    fi.kind == FK_REQ)
		args_check_op(&d, fi.op, fi.args, &e);
	struct sm_config c;
	if (config_parse(data, size, &c, &e) == 0)
		config_free(&c);
	return 0;
}
