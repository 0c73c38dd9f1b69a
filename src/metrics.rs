//! Full-ranking HR@K and NDCG@K (spec §5.3). Being written (issue 7).
