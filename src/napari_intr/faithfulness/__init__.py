"""Is INTR's attention an explanation? Faithfulness metrics for `intr eval --explanations`.

methods: saliency maps (INTR attention, Grad-CAM, RISE) at the model input resolution.
metrics: insertion/deletion (Petsiuk et al. 2018), pointing game, rank correlation.
sanity: cascading randomisation (Adebayo et al. 2018). flips: manipulation flip rate on
look-alike pairs. report: tables and plots. run: the command that ties them together.
"""
