from nvflare.apis.dxo import DataKind, from_bytes
from nvflare.apis.fl_context import FLContext
from nvflare.app_common.abstract.formatter import Formatter
from nvflare.app_common.app_constant import AppConstants


class NPFormatter(Formatter):
    """Reads back every result DXO cross-site evaluation kept and lists the metrics, sorted."""

    def format(self, fl_ctx: FLContext) -> str:
        results = fl_ctx.get_prop(AppConstants.VALIDATION_RESULT, {})
        lines = []
        for data_client in sorted(results):
            for model_name in sorted(results[data_client]):
                with open(results[data_client][model_name], "rb") as f:
                    dxo = from_bytes(f.read())
                if dxo.data_kind == DataKind.METRICS:
                    lines.append(f"{data_client}/{model_name}={dxo.data['weight_sum']:g}")
        return " ".join(lines)
